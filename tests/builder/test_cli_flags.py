"""The CLI's flag grammar (``builder.cli.flags``, issue 15): Docker's CLI rules (cobra/pflag)
held to the real docker client against the private ``dockerd`` (same exit status, same first
error line, ``docker`` read as ``pybuild``), and the parser's rules one by one on small commands."""

# ruff: noqa: F811 - the judge fixtures are imported, then named as test parameters
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_cli_commands import docker_argv, judge, pb, pb_argv  # noqa: F401 - fixtures by import

from builder.cli import flags


# -- against the docker client --------------------------------------------------------------------
def _both(pb: Any, judge: Any, *args: str) -> tuple[subprocess.CompletedProcess[str], ...]:
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return tuple(subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                                stdin=subprocess.DEVNULL)
                 for argv in (pb_argv(pb, *args), docker_argv(judge, *args)))


def _first(text: str) -> str:
    return (text.splitlines() or [""])[0].replace("docker", "pybuild")


FLAG_ERRORS = [
    ["ps", "--bogus"],
    ["ps", "-z"],
    ["ps", "-qz"],  # pflag names what is left of the bundle: 'z' in -z
    ["images", "--format"],  # a flag without its value
    ["ps", "-n"],
    ["ps", "--all=maybe"],  # a boolean flag takes =VALUE, Go's ParseBool words only
    ["commit", "-p=maybe", "c"],
    ["--bogus", "ps"],
    ["ps", "-n", "x"],  # a number flag's bad value: Go's ParseInt words
    ["ps", "--last=1.5"],
]


def test_flag_errors_as_the_docker_client(pb: Any, judge: Any) -> None:
    for args in FLAG_ERRORS:
        ours, docker = _both(pb, judge, *args)
        assert (ours.returncode, ours.stdout) == (docker.returncode, "") == (125, ""), (args, ours, docker)
        assert _first(ours.stderr) == _first(docker.stderr), args
        assert ours.stderr.splitlines()[1] == docker.stderr.splitlines()[1].replace("docker", "pybuild")


def test_flag_grammar_as_the_docker_client(pb: Any, judge: Any) -> None:
    for args in (["run", "--name", "flags-one", "busybox", "true"], ["create", "--name=flags-two", "busybox"]):
        ours, docker = _both(pb, judge, *args)
        assert ours.returncode == docker.returncode == 0, (ours.stderr, docker.stderr)
    # bundled shorthands are the flags one by one
    for args in (["ps", "-q", "-a"], ["ps", "-qa"], ["ps", "-aq", "--no-trunc"]):
        ours, docker = _both(pb, judge, *args)
        assert ours.returncode == docker.returncode == 0
        assert len(ours.stdout.split()) == len(docker.stdout.split()) == 2, args
    assert _both(pb, judge, "ps", "-qa")[0].stdout == _both(pb, judge, "ps", "-q", "-a")[0].stdout
    # a repeated --filter: both kept (the names are OR'ed), with = or a separate value
    for args in (["ps", "-a", "--filter", "name=flags-one", "--filter=name=flags-two", "--format", "{{.Names}}"],
                 ["ps", "-a", "-fname=flags-one", "-f", "name=flags-two", "--format={{.Names}}"]):
        ours, docker = _both(pb, judge, *args)
        assert sorted(ours.stdout.split()) == sorted(docker.stdout.split()) == ["flags-one", "flags-two"], args
    # after the image, a flag is the container's: `--rm` is the command, not found in the image
    ours, docker = _both(pb, judge, "run", "--name", "flags-three", "busybox", "--rm")
    assert ours.returncode == docker.returncode == 127, (ours.stderr, docker.stderr)
    assert '"--rm"' in ours.stderr and '"--rm"' in docker.stderr
    for tool in ("ours", "docker"):  # and the container stays: --rm was not ours
        out = (_both(pb, judge, "ps", "-a", "--filter", "name=flags-three", "--format", "{{.Names}}")
               [0 if tool == "ours" else 1].stdout)
        assert out.split() == ["flags-three"], tool
    # `-it` bundled, without a terminal: both refuse before creating anything
    ours, docker = _both(pb, judge, "run", "-it", "--rm", "--name", "flags-four", "busybox", "true")
    assert (ours.returncode, _first(ours.stderr)) == (docker.returncode, _first(docker.stderr)), (ours, docker)
    assert "flags-four" not in _both(pb, judge, "ps", "-a", "--format", "{{.Names}}")[0].stdout
    # and `exec -it` (the flags before the container, the command's after it)
    for tool in _both(pb, judge, "run", "-d", "--name", "flags-five", "busybox", "sleep", "60"):
        assert tool.returncode == 0, tool.stderr
    ours, docker = _both(pb, judge, "exec", "-it", "flags-five", "echo", "-it")
    assert (ours.returncode, _first(ours.stderr)) == (docker.returncode, _first(docker.stderr)) == (
        1, "the input device is not a TTY"), (ours, docker)
    ours, docker = _both(pb, judge, "exec", "-i", "flags-five", "echo", "-it", "--rm")
    assert (ours.returncode, ours.stdout) == (docker.returncode, docker.stdout) == (0, "-it --rm\n")
    # the container is looked up first, then the terminal is checked before the exec is made:
    # a stopped container is refused for the terminal, a missing one as missing
    for tool in _both(pb, judge, "create", "--name", "flags-six", "busybox", "true"):
        assert tool.returncode == 0, tool.stderr
    ours, docker = _both(pb, judge, "exec", "-it", "flags-six", "true")
    assert (ours.returncode, _first(ours.stderr)) == (docker.returncode, _first(docker.stderr)) == (
        1, "the input device is not a TTY"), (ours, docker)
    ours, docker = _both(pb, judge, "exec", "-it", "flags-seven", "true")
    assert ours.returncode == docker.returncode == 1, (ours, docker)
    assert "No such container: flags-seven" in _first(ours.stderr), ours.stderr
    assert "No such container: flags-seven" in _first(docker.stderr), docker.stderr


def test_a_refused_listing_exits_1_as_the_docker_client(pb: Any, judge: Any) -> None:
    """dockerd refuses the filter (400) and the client exits 1: only run and create say 125;
    dockerd 20.10 words it "Invalid filter", an exit code that is no number in Go's words."""
    for args in (["ps", "-a", "--filter", "before=flags-nosuch"], ["ps", "--filter", "beforex=1"], ["ps", "--filter", "status=bogus"],
                 ["ps", "--filter", "exited=x"], ["images", "--filter", "bogus=1"],
                 ["volume", "ls", "--filter", "bogus=1"], ["network", "ls", "--filter", "bogus=1"]):
        ours, docker = _both(pb, judge, *args)
        assert (ours.returncode, ours.stdout) == (docker.returncode, docker.stdout) == (1, ""), (args, ours, docker)
        assert ours.stderr.removeprefix("Error: ") == docker.stderr.removeprefix("Error response from daemon: "), args


def test_argument_errors_as_the_docker_client(pb: Any, judge: Any) -> None:
    ours, docker = _both(pb, judge, "rm")  # too few arguments: 1, and the help pointer
    assert ours.returncode == docker.returncode == 1
    assert ours.stderr.splitlines()[1] == docker.stderr.splitlines()[1].replace("docker", "pybuild")
    ours, docker = _both(pb, judge, "network")  # a bare group: its help, exit 0 (docker's on stderr)
    assert ours.returncode == docker.returncode == 0
    for out in (ours.stdout, docker.stdout + docker.stderr):
        assert "Usage:" in out and "Manage networks" in out and "Commands:" in out and "\n  ls " in out


# -- the parser, rule by rule ---------------------------------------------------------------------
def _cmd(**kw: Any) -> flags.Command:
    @flags.command("t", **kw)
    @flags.option("-a", "--all", "all_", is_flag=True)
    @flags.option("-q", "--quiet", is_flag=True)
    @flags.option("-p", "--publish", multiple=True)
    @flags.option("-n", "--last", type=int, default=-1)
    @flags.option("--name", default=None)
    @flags.option("--tls-verify", type=flags.BOOL, default=True, flag_value=True)
    @flags.option("--pause/--no-pause", default=True)
    @flags.option("--mode", type=flags.Choice(["a", "b"]), default="a")
    @flags.option("--jobs", type=flags.IntRange(1, 4), default=1)
    @flags.argument("image")
    @flags.argument("command", nargs=-1)
    def t(**kw: Any) -> dict[str, Any]:
        return kw

    return t


def parse(args: list[str], **kw: Any) -> dict[str, Any]:
    cmd = _cmd(**kw)
    ctx = flags.Context(cmd, info_name="t")
    cmd.parse_args(ctx, args)
    return ctx.params


def refused(args: list[str], **kw: Any) -> flags.UsageError:
    with pytest.raises(flags.UsageError) as e:
        parse(args, **kw)
    return e.value


def test_shorthands_bundle_and_take_their_value_attached() -> None:
    assert parse(["-qa", "img"]) == parse(["-q", "-a", "img"])
    assert parse(["-qa", "img"])["all_"] is True
    for args in (["-p8080:80", "img"], ["-p=8080:80", "img"], ["-p", "8080:80", "img"],
                 ["--publish=8080:80", "img"], ["--publish", "8080:80", "img"], ["-ap8080:80", "img"]):
        assert parse(args)["publish"] == ("8080:80",), args
    assert parse(["-n3", "img"])["last"] == 3 and parse(["-n", "-1", "img"])["last"] == -1


def test_repeats_add_to_a_list_or_replace() -> None:
    p = parse(["-p", "1", "--publish=2", "-p3", "img", "--name", "x", "--name", "y"])
    assert p["publish"] == ("1", "2", "3") and p["name"] == "y"
    assert parse(["img"])["publish"] == () and parse(["img"])["command"] == ()


def test_booleans_take_go_words_after_equals() -> None:
    assert parse(["-a=false", "img"])["all_"] is False
    assert parse(["--all=true", "img"])["all_"] is True and parse(["--all=1", "img"])["all_"] is True
    assert parse(["--no-pause", "img"])["pause"] is False and parse(["img"])["pause"] is True
    assert parse(["--pause=false", "img"])["pause"] is False
    # an optional value: bare means the flag value, =false says otherwise; never the next word
    assert parse(["--tls-verify", "img"])["tls_verify"] is True
    assert parse(["--tls-verify=false", "img"])["tls_verify"] is False
    assert parse(["--tls-verify", "false", "img"])["command"] == ("img",)
    assert refused(["--all=yes", "img"]).format_message() == (
        'invalid argument "yes" for "-a, --all" flag: strconv.ParseBool: parsing "yes": invalid syntax')


def test_double_dash_ends_the_flags_and_arguments_mix_unless_told() -> None:
    p = parse(["img", "-a", "sh", "--", "-q", "--name"])
    assert p["all_"] is True and p["quiet"] is False and p["command"] == ("sh", "-q", "--name")
    p = parse(["-a", "img", "sh", "-q", "--rm", "-x"], interspersed=False)
    assert p["all_"] is True and p["quiet"] is False and p["command"] == ("sh", "-q", "--rm", "-x")
    assert parse(["-", "img"])["image"] == "-"  # a lone dash is a word


def test_errors_name_the_flag_as_pflag_does() -> None:
    e = refused(["--bogus=1", "img"])
    assert isinstance(e, flags.NoSuchOption) and e.format_message() == "unknown flag: --bogus"
    assert refused(["-qaz", "img"]).format_message() == "unknown shorthand flag: 'z' in -z"
    assert refused(["-qzx", "img"]).format_message() == "unknown shorthand flag: 'z' in -zx"
    assert refused(["img", "--name"]).format_message() == "flag needs an argument: --name"
    assert refused(["img", "-qn"]).format_message() == "flag needs an argument: 'n' in -n"
    e = refused(["-n", "x", "img"])  # pflag's words, as for a boolean's
    assert isinstance(e, flags.FlagError) and e.format_message() == (
        'invalid argument "x" for "-n, --last" flag: strconv.ParseInt: parsing "x": invalid syntax')
    assert refused(["--mode", "c", "img"]).format_message() == (
        "Invalid value for '--mode': 'c' is not one of 'a', 'b'.")
    assert refused(["--jobs", "9", "img"]).format_message() == (
        "Invalid value for '--jobs': 9 is not in the range 1<=x<=4.")
    e = refused(["-a"])
    assert isinstance(e, flags.MissingParameter) and e.format_message() == "Missing argument 'IMAGE'."
    assert e.ctx is not None and e.ctx.command_path == "t"


def test_help_is_h_unless_the_command_has_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["-h"], ["img", "--help", "--name", "x"], ["-qh"]):
        with pytest.raises(flags.Exit) as e:
            parse(args)
        assert e.value.exit_code == 0
        out = capsys.readouterr().out
        assert out.startswith("Usage: t [OPTIONS] IMAGE [COMMAND...]\n"), out
        assert "  -a, --all\n" in out and "  -p, --publish list" in out and "      --name string" in out
        assert "  -n, --last int" in out and "(default -1)" in out

    @flags.command("h")
    @flags.option("-h", "--hostname")
    def h(hostname: str | None) -> None:
        """Has a -h of its own."""

    ctx = flags.Context(h, info_name="h")
    h.parse_args(ctx, ["-h", "box"])
    assert ctx.params == {"hostname": "box"}
    assert refused(["--help=1", "img"]).format_message() == "unknown flag: --help"


def test_a_group_reads_its_flags_before_the_command_and_envvars(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    @flags.group("g")
    @flags.option("--root", envvar="T_ROOT", default=None)
    @flags.option("-v", "--version", is_flag=True, is_eager=True, expose_value=False,
                  callback=lambda ctx, _p, v: ctx.exit(3) if v else None)
    @flags.pass_context
    def g(ctx: flags.Context, root: str | None) -> None:
        ctx.obj = root

    @g.command("sub")
    @flags.option("-a", is_flag=True)
    @flags.argument("words", nargs=-1)
    @flags.pass_obj
    def sub(obj: Any, a: bool, words: tuple[str, ...]) -> None:
        seen.append((obj, a, words))

    g.main(["--root", "/r", "sub", "x", "-a", "y"], prog_name="g")
    monkeypatch.setenv("T_ROOT", "/env")
    g.main(["sub"], prog_name="g")
    assert seen == [("/r", True, ("x", "y")), ("/env", False, ())]
    with pytest.raises(flags.Exit) as e:
        g.main(["-v", "sub"], prog_name="g")
    assert e.value.exit_code == 3 and len(seen) == 2
    with pytest.raises(flags.NoSuchOption):
        g.main(["sub", "-v"], prog_name="g")  # -v is the group's, before the command only...
    with pytest.raises(flags.NoSuchOption):
        g.main(["-v", "--bogus"], prog_name="g")  # ...and a flag error comes before any callback
    with pytest.raises(flags.NoSuchCommand) as nc:
        g.main(["nope"], prog_name="g")
    assert nc.value.format_message() == "g: 'nope' is not a g command."
    with pytest.raises(flags.NoArgsIsHelp):
        g.main([], prog_name="g")


def test_the_parser_loads_neither_click_nor_inspect() -> None:
    """The vocabulary builds plain objects (no ``inspect``, no class made per command); no
    command module loads click."""
    import sys

    code = ("import sys, builder.cli; light = 'inspect' not in sys.modules; "
            "import builder.cli.images, builder.cli.containers, builder.cli.container_run, "
            "builder.cli.system, builder.cli.registry, builder.cli.build; "
            "print(light, 'click' not in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.stdout.split() == ["True", "True"], r.stderr

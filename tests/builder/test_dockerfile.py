"""The typed level, lint, the grammar loader and its on-disk cache, and the CLI commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.base.errors import DockerfileSyntaxError, InstructionError
from builder.imagebuild.dockerfile import (
    Add,
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    Stopsignal,
    User,
    Volume,
    Workdir,
    expanded_fields,
    lint,
    load,
    parse,
    parse_mount,
    typed,
)
from builder.imagebuild.dockerfile.instructions import parse_go_duration, suggest
from builder.imagebuild.expand import expand_word

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def _cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-c", "from builder.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


# --- typed level ---------------------------------------------------------------------------


def test_stages_global_args_and_instruction_types() -> None:
    df = load(
        "ARG BASE=alpine V\n"
        "FROM --platform=$BUILDPLATFORM $BASE AS Build\n"
        "ARG V\n"
        "RUN --network=none echo hi\n"
        "FROM scratch\n"
        "COPY --from=build /a /b\n",
        filename="ctx/Dockerfile",
    )
    assert [(a.name, a.default) for a in df.global_args] == [("BASE", "alpine"), ("V", None)]
    assert len(df.stages) == 2
    build, final = df.stages
    assert (build.index, build.base, build.name, build.platform) == (
        0,
        "$BASE",
        "build",
        "$BUILDPLATFORM",
    )
    assert isinstance(build.from_, From) and build.location.start_line == 2
    assert [type(i) for i in build.instructions] == [Arg, Run]
    run = build.instructions[1]
    assert (
        isinstance(run, Run)
        and run.network == "none"
        and run.command == ("echo hi",)
        and run.shell_form
    )
    assert (final.name, final.base) == (None, "scratch")
    copy = final.instructions[0]
    assert isinstance(copy, Copy) and not isinstance(copy, Add)
    assert (copy.from_, copy.sources, copy.dest) == ("build", ("/a",), "/b")
    assert copy.location.filename == "ctx/Dockerfile" and copy.original == "COPY --from=build /a /b"
    assert df.stage("BUILD") is build and df.stage("1") is final and df.stage("nope") is None


def test_every_instruction_type() -> None:
    df = load(
        "FROM a\n"
        'CMD ["x"]\n'
        "ENTRYPOINT exec x\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        "ENV A=1 B='2'\n"
        "LABEL k=v\n"
        "EXPOSE 8080 443/tcp\n"
        "ADD --checksum=sha256:abc --keep-git-dir --unpack=false https://x/y.tar /y\n"
        "VOLUME /v\n"
        "USER app:app\n"
        "WORKDIR /w\n"
        "ONBUILD COPY . /src\n"
        "STOPSIGNAL SIGINT\n"
        'HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --start-interval=1s --retries=4 CMD ["check"]\n'
        "MAINTAINER someone\n"
    )
    ins = df.stages[0].instructions
    cmd, ep, sh, env, label, expose, add, vol, user, wd, onb, stop, hc, maint = ins
    assert isinstance(cmd, Cmd) and cmd.command == ("x",) and not cmd.shell_form
    assert isinstance(ep, Entrypoint) and ep.command == ("exec x",) and ep.shell_form
    assert isinstance(sh, Shell) and sh.shell == ("/bin/sh", "-ec")
    assert isinstance(env, Env) and [(p.key, p.value) for p in env.pairs] == [
        ("A", "1"),
        ("B", "'2'"),
    ]
    assert isinstance(label, Label) and label.pairs[0].key == "k"
    assert isinstance(expose, Expose) and expose.ports == ("443/tcp", "8080")
    assert (
        isinstance(add, Add)
        and add.checksum == "sha256:abc"
        and add.keep_git_dir
        and add.unpack is False
    )
    assert isinstance(vol, Volume) and vol.paths == ("/v",)
    assert isinstance(user, User) and user.user == "app:app"
    assert isinstance(wd, Workdir) and wd.path == "/w"
    assert (
        isinstance(onb, Onbuild)
        and onb.trigger == "COPY . /src"
        and isinstance(onb.instruction, Copy)
    )
    assert isinstance(stop, Stopsignal) and stop.signal == "SIGINT"
    assert isinstance(hc, Healthcheck)
    assert hc.test == ("CMD", "check")
    assert (hc.interval, hc.timeout, hc.start_period, hc.start_interval, hc.retries) == (
        90_000_000_000,
        500_000_000,
        2_000_000_000,
        1_000_000_000,
        4,
    )
    assert isinstance(maint, Maintainer) and maint.name == "someone"
    # frozen
    with pytest.raises(AttributeError):
        maint.name = "other"  # type: ignore[misc]


def test_healthcheck_none_and_shell_form() -> None:
    df = load("FROM a\nHEALTHCHECK NONE\nHEALTHCHECK CMD curl -f http://x || exit 1\n")
    none, shell = df.stages[0].instructions
    assert isinstance(none, Healthcheck) and none.test == ("NONE",) and none.interval is None
    assert isinstance(shell, Healthcheck) and shell.test == (
        "CMD-SHELL",
        "curl -f http://x || exit 1",
    )


def test_run_heredocs_and_copy_heredoc_sources() -> None:
    df = load(
        "FROM a\nRUN <<EOF bash\necho $HOME\nEOF\nCOPY <<-A <<'B' /etc/\n\t\tone\n\tA\ntwo\nB\n"
    )
    run, copy = df.stages[0].instructions
    assert isinstance(run, Run)
    assert run.command == ("<<EOF bash",)
    assert [(h.name, h.content, h.expand) for h in run.heredocs] == [("EOF", "echo $HOME\n", True)]
    assert isinstance(copy, Copy) and copy.sources == () and copy.dest == "/etc/"
    assert [(h.name, h.content, h.expand, h.chomp) for h in copy.heredocs] == [
        ("A", "one\n", True, True),
        ("B", "two\n", False, False),
    ]


def test_arg_one_record_per_declared_name() -> None:
    df = load('FROM a\nARG a b=2 c="x y"\n')
    args = df.stages[0].instructions
    assert [(a.name, a.default) for a in args if isinstance(a, Arg)] == [
        ("a", None),
        ("b", "2"),
        ("c", '"x y"'),
    ]
    assert len({a.location for a in args}) == 1
    # values stay raw: the build expands them
    assert expand_word('"x y"', {}) == "x y"


def test_expanded_fields_follow_docker() -> None:
    df = load("FROM $B\nRUN echo $X\nCMD echo $X\nCOPY $S /d\nENV A=$B\nWORKDIR $W\n")
    stage = df.stages[0]
    assert expanded_fields(stage.from_) == ("base", "platform")
    run, cmd, copy, env, wd = stage.instructions
    assert expanded_fields(run) == ("mounts",)
    assert expanded_fields(cmd) == ()
    assert "sources" in expanded_fields(copy) and "dest" in expanded_fields(copy)
    assert expanded_fields(env) == ("pairs",)
    assert expanded_fields(wd) == ("path",)


def test_instruction_errors_have_file_line_column() -> None:
    with pytest.raises(InstructionError) as info:
        load(
            "FROM a\n\nRUN --mount=type=cache,target=/x  --netwrk=none true\n",
            filename="sub/Dockerfile",
        )
    e = info.value
    assert isinstance(e, DockerfileSyntaxError)
    assert (e.filename, e.line, e.column) == ("sub/Dockerfile", 3, 35)
    assert e.message == "unknown flag: netwrk (did you mean network?)"
    assert e.render().splitlines()[-1] == " " * 34 + "^"


def test_typed_rejects_what_parse_accepts() -> None:
    tree = parse("FROM a\nHEALTHCHECK CONNECT TCP 7000\n")
    assert tree.nodes[1].args == ("CONNECT", "TCP 7000")
    with pytest.raises(InstructionError, match="Unknown type"):
        typed(tree)


# --- mounts and durations ------------------------------------------------------------------


def test_parse_mount_kinds_and_defaults() -> None:
    bind = parse_mount("target=/src,source=ctx,from=build")
    assert (bind.type, bind.target, bind.source, bind.from_, bind.readonly) == (
        "bind",
        "/src",
        "ctx",
        "build",
        True,
    )
    cache = parse_mount("type=cache,dst=/c,id=go,sharing=LOCKED,mode=0700,uid=1,gid=2")
    assert (cache.readonly, cache.sharing, cache.mode, cache.uid, cache.gid) == (
        False,
        "locked",
        0o700,
        1,
        2,
    )
    tmpfs = parse_mount("type=tmpfs,target=/t,size=1g")
    assert tmpfs.size == 1024**3 and not tmpfs.readonly
    secret = parse_mount("type=secret,id=tok,env=TOKEN,required=true")
    assert (secret.id, secret.env, secret.required, secret.readonly) == ("tok", "TOKEN", True, True)
    ssh = parse_mount("type=ssh,required")
    assert ssh.required and ssh.options == (("type", "ssh"), ("required", "true"))
    rw = parse_mount('type=bind,"target=/a,b",rw')
    assert rw.target == "/a,b" and rw.readonly is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("type=volume,target=/x", 'unsupported mount type "volume"'),
        ("type=cachee,target=/x", 'unsupported mount type "cachee" (did you mean cache?)'),
        ("type=bind", 'mount type "bind" requires a target'),
        ("type=bind,target=/x,size=1m", "unexpected key 'size' for mount type 'bind'"),
        ("type=tmpfs,target=/x,sharing=shared", "invalid cache sharing set for tmpfs mount"),
        ("type=cache,target=/x,sharing=sometimes", 'unsupported sharing value "sometimes"'),
        ("type=cache,target=/x,mode=999", 'failed to parse mode "999"'),
        ("type=ssh,from=x", "ssh mounts do not support a from"),
        ("type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,target=/x,readonly=maybe", "invalid value for readonly: maybe"),
        ("type=bind,target=/x,bogus", "unexpected key 'bogus' in 'bogus'"),
        ('type=bind,"target=/x', "unterminated quote"),
    ],
)
def test_parse_mount_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_mount(spec)
    assert message in str(info.value)


def test_mount_values_with_variables_wait_for_expansion() -> None:
    raw = parse_mount("type=cache,target=$DIR,mode=$MODE")
    assert raw.needs_expansion and raw.target == "$DIR" and raw.mode is None
    env = {"DIR": "/cache", "MODE": "0755"}
    done = parse_mount(raw.spec, expand=lambda v: expand_word(v, env))
    assert not done.needs_expansion and (done.target, done.mode) == ("/cache", 0o755)
    with pytest.raises(ValueError):
        parse_mount(raw.spec, expand=lambda v: expand_word(v, {"DIR": "/c", "MODE": "x"}))


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("1ns", 1),
        ("1us", 1_000),
        ("1µs", 1_000),
        ("1.5ms", 1_500_000),
        ("30s", 30_000_000_000),
        ("1m30s", 90_000_000_000),
        ("1h", 3_600_000_000_000),
        ("2h45m", 9_900_000_000_000),
        ("-1s", -1_000_000_000),
        ("+5s", 5_000_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1.5", "--1s", "1s2", " 1s"])
def test_go_durations_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="time: invalid duration"):
        parse_go_duration(text)


def test_suggestions_follow_buildkit() -> None:
    assert suggest("FORM", ["from", "run"]) == "FROM"
    assert suggest("rnu", ["env", "run"]) == "run"
    assert suggest("Xyzzy", ["from", "run"]) is None
    assert suggest("run", ["run"]) is None
    assert suggest("frm", ["from"], case_sensitive=True) == "from"


# --- lint ----------------------------------------------------------------------------------


def test_lint_rules_and_locations() -> None:
    tree = parse(
        "FROM alpine as Builder\n"
        "ARG GITHUB_TOKEN\n"
        "ENV PUBLIC_KEY=x\n"
        "MAINTAINER me\n"
        "WORKDIR app\n"
        "COPY $SRC /dst\n"
        "CMD run me\n",
        filename="Dockerfile.dev",
    )
    rendered = [w.render() for w in lint(tree)]
    assert rendered == [
        "WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)",
        "WARN: StageNameCasing: Stage name 'Builder' should be lowercase (line 1)",
        'WARN: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data (ARG "GITHUB_TOKEN") (line 2)',
        "WARN: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 4)",
        'WARN: WorkdirRelativePath: Relative workdir "app" can have unexpected results if the base image changes (line 5)',
        "WARN: UndefinedVar: Usage of undefined variable '$SRC' (line 6)",
        "WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 7)",
    ]
    assert all(w.location.filename == "Dockerfile.dev" for w in lint(tree))


def test_lint_undefined_var_suggests_and_respects_defaults() -> None:
    tree = parse("FROM a\nARG VERSION\nENV X=$VERSOIN Y=${MISSING:-fine} Z=${PATH}\n")
    assert [w.message for w in lint(tree)] == [
        "Usage of undefined variable '$VERSOIN' (did you mean $VERSION?)"
    ]


def test_lint_check_directive_skips_rules() -> None:
    tree = parse(
        "# check=skip=JSONArgsRecommended,MaintainerDeprecated\nFROM a\nCMD x\nMAINTAINER m\nWORKDIR rel\n"
    )
    assert [w.rule for w in lint(tree)] == ["WorkdirRelativePath"]


def test_lint_multiple_instructions() -> None:
    tree = parse('FROM a\nCMD ["a"]\nENTRYPOINT ["b"]\nCMD ["c"]\nFROM b\nCMD ["d"]\n')
    assert [(w.rule, w.location.start_line) for w in lint(tree)] == [
        ("MultipleInstructionsDisallowed", 2)
    ]


# --- grammar loader and cache --------------------------------------------------------------


def test_the_grammar_file_is_a_real_lalr_grammar() -> None:
    from builder.imagebuild.dockerfile.larkglue import TREE_BUILDER, LineLexer
    from grammar import grammar_path
    from grammar import load as load_grammar

    text = grammar_path("dockerfile").read_text()
    assert "instruction: KEYWORD FLAGS? _arguments? heredocs?" in text
    parser = load_grammar("dockerfile", lexer=LineLexer, transformer=TREE_BUILDER)
    assert parser.options.parser == "lalr"
    assert {r.origin.name for r in parser.rules} >= {
        "start",
        "directives",
        "instructions",
        "heredocs",
        "instruction",
        "sub",
        "health",
    }
    assert load_grammar("dockerfile", lexer=LineLexer, transformer=TREE_BUILDER) is parser


_PROBE = """
import sys, time
import lark.load_grammar as lg
calls = []
real = lg.load_grammar
lg.load_grammar = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
import lark.lark
lark.lark.load_grammar = lg.load_grammar
t = time.perf_counter()
from builder.imagebuild.dockerfile import parse
tree = parse(open(sys.argv[1]).read())
print(len(tree.nodes), len(calls), (time.perf_counter() - t) * 1000)
"""


def test_compiled_tables_are_cached_on_disk(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM a\n" + "RUN echo hi\n" * 19)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYBUILD_GRAMMAR_CACHE": str(cache), "PYTHONPATH": str(ROOT)}

    def probe() -> tuple[int, int, float]:
        out = subprocess.run(
            [PY, "-c", _PROBE, str(dockerfile)], capture_output=True, text=True, env=env, check=True
        )
        n, calls, ms = out.stdout.split()
        return int(n), int(calls), float(ms)

    assert probe()[:2] == (20, 1)  # first run: grammar analysed, tables written
    assert len(list(cache.glob("grammar-dockerfile-*.lark-cache"))) == 1
    runs = [probe() for _ in range(3)]
    assert all(r[:2] == (20, 0) for r in runs)  # later runs: loaded, never re-analysed
    # a loose guard against regressions (bench/bench_parse.py reports the real figure)
    assert min(r[2] for r in runs) < 150


def test_unwritable_cache_dir_still_parses(tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    env = {**os.environ, "PYBUILD_GRAMMAR_CACHE": str(blocked / "sub"), "PYTHONPATH": str(ROOT)}
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM a\n")
    out = subprocess.run(
        [PY, "-c", _PROBE, str(dockerfile)], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split()[:2] == ["1", "1"]


# --- CLI -----------------------------------------------------------------------------------


def test_cli_parse_json_from_stdin() -> None:
    text = (
        '# escape=\\\nFROM a\nCOPY --from=b \\\n  a /b\nENV A="x y"\nONBUILD RUN ["echo", "test"]\n'
    )
    proc = _cli("dockerfile", "parse", "--json", "-", stdin=text)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["directives"] == {"escape": "\\"}
    copy, env, onbuild = data["instructions"][1:]
    assert {
        k: copy[k] for k in ("cmd", "flags", "args", "json", "start_line", "end_line", "heredocs")
    } == {
        "cmd": "copy",
        "flags": ["--from=b"],
        "args": ["a", "/b"],
        "json": False,
        "start_line": 3,
        "end_line": 4,
        "heredocs": [],
    }
    assert env["pairs"] == [{"key": "A", "value": '"x y"', "legacy": False}]
    assert onbuild["sub"] == {"cmd": "run", "flags": [], "args": ["echo", "test"], "json": True}


def test_cli_parse_plain(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM a\nRUN echo \\\n  hi\n")
    proc = _cli("dockerfile", "parse", "Dockerfile", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["# escape=\\", '1: (from "a")', '2-3: (run "echo   hi")']


def test_cli_parse_missing_file(tmp_path: Path) -> None:
    proc = _cli("dockerfile", "parse", "nope", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: nope: No such file or directory"


def test_cli_check_warnings_and_error_flag(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM a\nCMD echo hi\n")
    ok = _cli("dockerfile", "check", "Dockerfile", cwd=tmp_path)
    assert ok.returncode == 0
    assert ok.stdout.splitlines() == [
        "WARN: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)",
        "Check complete, 1 warning has been found!",
    ]
    strict = _cli("dockerfile", "check", "--error", "Dockerfile", cwd=tmp_path)
    assert strict.returncode == 1
    (tmp_path / "Clean").write_text('FROM a\nCMD ["echo", "hi"]\n')
    clean = _cli("dockerfile", "check", "--error", "Clean", cwd=tmp_path)
    assert clean.returncode == 0 and clean.stdout.strip() == "Check complete, no warnings found."


def test_cli_check_directive_error_true(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("# check=error=true\nFROM a\nMAINTAINER me\n")
    proc = _cli("dockerfile", "check", "Dockerfile", cwd=tmp_path)
    assert proc.returncode == 1
    assert "MaintainerDeprecated" in proc.stdout


def test_cli_check_reports_typed_errors(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM a\nONBUILD ONBUILD RUN x\n")
    proc = _cli("dockerfile", "check", "Dockerfile", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "Dockerfile:2:9: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
        "ONBUILD ONBUILD RUN x",
        "        ^",
    ]


def test_parse_is_fast_on_a_large_file() -> None:
    text = "FROM a\n" + "".join(
        f"RUN echo {i} && \\\n  true\nENV K{i}=v{i}\nCOPY a{i} /b/\n" for i in range(1000)
    )
    start = time.perf_counter()
    tree = parse(text)
    elapsed = time.perf_counter() - start
    assert len(tree.nodes) == 3001
    assert elapsed < 5


def test_a_token_sequence_the_grammar_refuses_is_still_a_syntax_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from builder.imagebuild.dockerfile import syntax

    def broken(self: syntax._Source) -> Iterator[syntax._Tok]:
        yield syntax._Tok("FLAGS", "--x", 1, ["--x"])  # flags with no keyword before them

    monkeypatch.setattr(syntax._Source, "tokens", broken)
    with pytest.raises(DockerfileSyntaxError) as info:
        parse("FROM a\n")
    assert str(info.value) == "Dockerfile:1:1: cannot parse this instruction (UnexpectedToken)"

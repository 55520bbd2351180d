"""``version`` and a cached ``--format`` listing load no ``typing``, ``datetime`` nor (``version``)
``subprocess``, and ``version``'s kept git/runc answers give what asking them gives (issue 15).

``builder.system.engine`` keeps ``git rev-parse --short HEAD``'s and ``runc --version``'s
outputs in the user cache dir (``version-probes.json``), keyed by HEAD's commit and by runc's
file: a repeated ``version`` spawns nothing, a new commit or another runc is asked again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from builder.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit as e:
    if e.code not in (0, None):
        raise
sys.stdout.flush()
sys.stderr.write("\nMODULES " + json.dumps(sorted(sys.modules)) + "\n")
"""


def _env(cache: Path, path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYBUILD_ROOT"}
    env["PYBUILD_GRAMMAR_CACHE"] = str(cache)  # the user cache dir: parses and version probes
    if path is not None:
        env["PATH"] = path
    return env


def _loaded(root: Path, argv: list[str], env: dict[str, str]) -> tuple[str, set[str]]:
    """(stdout, modules loaded) of one command in a fresh interpreter."""
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(["--root", str(root), *argv])],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=True)
    return r.stdout, set(json.loads(r.stderr.rpartition("MODULES ")[2]))


@pytest.mark.parametrize("argv", [["version"], ["version", "--format", "{{json .}}"],
                                  ["ps", "-a", "--format", "{{.Names}}"],
                                  ["ps", "-a", "--format", "{{.ID}} {{.Status}}"]], ids=" ".join)
def test_no_typing_nor_datetime(tmp_path: Path, argv: list[str]) -> None:
    env = _env(tmp_path / "cache")
    for _ in range(3):  # (a commit landing between two runs changes version's: run again)
        first, _mods = _loaded(tmp_path / "root", argv, env)  # keeps the probes, the template's parse
        out, mods = _loaded(tmp_path / "root", argv, env)
        if out == first:
            break
    assert "builder.cli" in mods and out == first
    assert not mods & {"typing", "datetime", "_datetime"}, sorted(mods & {"typing", "datetime"})
    if argv[0] == "version":  # nothing asked again: no process, no subprocess module
        assert not mods & {"subprocess", "builder.system.probe"}
        assert out.strip()


def test_a_cached_inspect_format_loads_no_typing(busybox: Any, tmp_path: Path) -> None:
    env = _env(tmp_path / "cache")
    argv = ["inspect", "--format", "{{.Id}} {{.Config.Cmd}}", "busybox"]
    first, _ = _loaded(busybox.root, argv, env)
    out, mods = _loaded(busybox.root, argv, env)
    assert out == first and out.startswith("sha256:")
    assert "typing" not in mods


def _fake_runc(directory: Path, version: str) -> None:
    directory.mkdir(exist_ok=True)
    runc = directory / "runc"
    runc.write_text(f"#!/bin/sh\necho 'runc version {version}'\necho 'commit: c-{version}'\n")
    runc.chmod(0o755)


def _head() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_kept_answers_follow_runc_and_head(tmp_path: Path) -> None:
    cache, bin_ = tmp_path / "cache", tmp_path / "bin"
    _fake_runc(bin_, "1.2.3")
    git = shutil.which("git")
    assert git is not None
    (bin_ / "git").symlink_to(git)
    env = _env(cache, f"{bin_}")
    root = tmp_path / "root"
    fmt = ["version", "--format", "{{.Client.GitCommit}} {{range .Server.Components}}{{.Name}}={{.Version}} {{end}}"]

    def version() -> tuple[list[str], set[str]]:
        """The fields shown and the modules loaded; the commit checked against git's (before or
        after the run: others may commit meanwhile)."""
        before = _head()
        out, mods = _loaded(root, fmt, env)
        fields = out.split()
        assert fields[0] in (before, _head()), (fields, before)
        return fields[1:], mods

    cold, mods = version()
    assert "subprocess" in mods  # asked: nothing kept yet
    assert cold == [cold[0], "runc=1.2.3"] and cold[0].startswith("Engine=")
    kept = json.loads((cache / "version-probes.json").read_text())
    assert sorted(k.partition(":")[0] for k in kept) == ["git", "runc"]
    assert version()[0] == cold  # from the cache, the same
    # another runc (a new file at that path): asked again, its old key dropped
    (bin_ / "runc").unlink()
    _fake_runc(bin_, "4.5.6")
    again, mods = version()
    assert "subprocess" in mods and again == [cold[0], "runc=4.5.6"]
    kept = json.loads((cache / "version-probes.json").read_text())
    assert [v for k, v in kept.items() if k.startswith("runc:")] == ["runc version 4.5.6\ncommit: c-4.5.6\n"]
    assert len([k for k in kept if k.startswith("git:")]) == 1
    # a kept commit for another HEAD is not this one's: git is asked (the key is HEAD's commit)
    (cache / "version-probes.json").write_text(json.dumps({"git:0000": "bogus\n"}))
    assert version()[0] == again
    # no runc on PATH: no runc component, nothing spawned for it
    (bin_ / "runc").unlink()
    assert version()[0] == [cold[0]]
    # an unreadable cache file is asked around, then replaced
    (cache / "version-probes.json").write_text("{not json")
    _fake_runc(bin_, "7.8.9")
    assert version()[0] == [cold[0], "runc=7.8.9"]
    assert json.loads((cache / "version-probes.json").read_text())


def test_short_version_flag_uses_the_kept_commit(tmp_path: Path) -> None:
    env = _env(tmp_path / "cache")
    for _ in range(3):  # (a commit landing between the two runs: run again)
        before = _head()
        out, _mods = _loaded(tmp_path / "root", ["--version"], env)
        again, mods = _loaded(tmp_path / "root", ["--version"], env)
        if again == out:
            break
    assert again == out and out.startswith("pybuild version ") and "subprocess" not in mods
    assert out.split()[-1] in (before, _head())  # ``build <git's short commit>``

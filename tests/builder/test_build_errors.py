"""Bad builds fail with one located line, exit ≠ 0, nothing tagged, store and mounts unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CASES = {
    "unknown-from-stage": (
        "FROM busybox\nCOPY --from=nowhere /x /x\n",
        "Dockerfile:2: nowhere: not found locally"),
    "missing-file": (
        "FROM busybox\nRUN true\nCOPY missing.txt /m\n",
        "Dockerfile:3: COPY missing.txt: not found in build context"),
    "outside-context": (
        "FROM busybox\nCOPY ../secret.txt /s\n",
        "Dockerfile:2: COPY ../secret.txt: forbidden path outside the build context"),
    "run-exit-2": (
        "FROM busybox\nRUN echo first line && echo about to fail >&2 && exit 2\n",
        "Dockerfile:2: RUN echo first line && echo about to fail >&2 && exit 2: process did not "
        "complete successfully: exit code: 2"),
    "bad-mount": (
        "FROM busybox\nRUN --mount=type=bind,target=/x,bogus=1 true\n",
        "Dockerfile:2"),
    "bad-mount-type": (
        "FROM busybox\nRUN --mount=type=nfs,target=/x true\n",
        "Dockerfile:2"),
    "missing-command": (
        "FROM busybox\nRUN no-such-command\n",
        "exit code: 127"),
    "unknown-base": (
        "FROM not-in-the-store:1.0\n",
        "Dockerfile:1: not-in-the-store:1.0: not found locally"),
    "scratch-run": (
        "FROM scratch\nRUN true\n",
        "Dockerfile:2: RUN true"),
}


def mounts(root: Path) -> list[str]:
    """Mounts under the test's state root (other suites may mount elsewhere meanwhile)."""
    return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in ln]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_build(case: str, busybox: Any, tmp_path: Path, store_listing: Any) -> None:
    dockerfile, message = CASES[case]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (tmp_path / "secret.txt").write_text("outside\n")
    before_store = store_listing(busybox.root / "store")
    before_mounts = mounts(busybox.root)
    r = busybox("build", "--progress=plain", "-t", "bad:1", str(ctx), check=False)
    assert r.returncode != 0, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, r.stderr  # one line (syntax errors add the source line and a caret)
    last = errors[0]
    assert message in last, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    # nothing tagged, nothing left behind
    images = busybox("images").stdout
    repos = [ln.split()[0] for ln in images.splitlines()[1:] if ln.strip()]
    assert "bad" not in repos, images
    after = [p for p in store_listing(busybox.root / "store") if not p[0].startswith("ingest")]
    assert [p for p in after if p[0] in ("index.json",)] == [p for p in before_store if p[0] == "index.json"]
    assert mounts(busybox.root) == before_mounts == []
    run_dir = busybox.root / "run"
    left = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")] if run_dir.exists() else []
    assert left == [], left


def test_failing_run_shows_its_last_log_lines(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    script = " && ".join(f"echo line{i}" for i in range(30)) + " && exit 2"
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN {script}\n")
    r = busybox("build", "--progress=plain", "-t", "bad:1", str(ctx), check=False)
    assert r.returncode == 1
    tail = r.stderr.split("------")[1].strip().splitlines()
    assert tail[0] == "> Dockerfile:2:"
    assert tail[1:] == [f"line{i}" for i in range(10, 30)]  # the last 20


def test_unknown_target(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox AS a\n")
    r = busybox("build", "--target", "b", str(ctx), check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == 'Error: target stage "b" could not be found'


def test_dockerfile_syntax_error_is_located(busybox: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nFROBNICATE x\n")
    r = busybox("build", str(ctx), check=False)
    assert r.returncode == 1
    assert r.stderr.startswith("Error: Dockerfile:2:")

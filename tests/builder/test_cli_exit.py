"""How the ``pybuild`` command ends (issue 15): ``builder.cli.main`` run as the command skips
the interpreter's tear-down (``os._exit`` after the ``atexit`` functions and a flush), which must
change nothing a caller sees: the exit status, the whole output through a pipe, the ``atexit``
functions run, a thread that is not a daemon waited for. Called with arguments (in-process) it
still returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder.cli import main


def _command(tmp_path: Path, before: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pybuild --root ROOT ARGS`` as the console script runs it, with *before* run first."""
    argv = ["pybuild", "--root", str(tmp_path / "root"), *args]
    code = f"{before}\nimport sys\nsys.argv = {argv!r}\nfrom builder.cli import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_atexit_functions_run_and_the_status_is_kept(tmp_path: Path) -> None:
    mark = tmp_path / "atexit"
    before = f"import atexit, pathlib\natexit.register(pathlib.Path({str(mark)!r}).write_text, 'ran')"
    r = _command(tmp_path, before, "version", "--format", "{{.Client.Version}}")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    assert mark.read_text() == "ran"
    r = _command(tmp_path, before.replace("'ran'", "'ran again'"), "ps", "--bogus")
    assert r.returncode == 125 and r.stderr.startswith("unknown flag: --bogus")
    assert mark.read_text() == "ran again"


def test_a_thread_that_is_not_a_daemon_is_waited_for(tmp_path: Path) -> None:
    mark = tmp_path / "thread"
    before = ("import pathlib, threading, time\n"
              f"threading.Thread(target=lambda: (time.sleep(0.5), pathlib.Path({str(mark)!r})"
              ".write_text('done'))).start()")
    r = _command(tmp_path, before, "version", "--format", "{{.Client.Version}}")
    assert r.returncode == 0, r.stderr
    assert mark.read_text() == "done"


def test_the_whole_output_goes_through_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--help"])  # in-process: returns, as before
    expected = capsys.readouterr().out
    assert expected.count("\n") > 50
    r = _command(tmp_path, "", "run", "--help")
    assert r.returncode == 0 and r.stdout == expected

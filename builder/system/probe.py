"""Programs ``version`` and ``info`` ask (git's commit, runc's version), started side by side
and read after; only when ``builder.system.engine`` does not keep their answer already, so that
``version`` loads no ``subprocess`` (and its selectors, threading, signal) on its usual path."""

from __future__ import annotations

import subprocess


def started(argv: list[str]) -> subprocess.Popen[str] | None:
    """*argv* started with its output piped (found on PATH as ``execvp`` finds it); None when
    it cannot start."""
    try:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None


def finished(proc: subprocess.Popen[str] | None, timeout: float) -> tuple[int, str]:
    """(exit status, output) of *proc*; (-1, '') when it did not start or ran past *timeout*
    seconds (it is killed then)."""
    if proc is None:
        return -1, ""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return -1, ""
    return proc.returncode, out

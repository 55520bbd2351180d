"""``ADD`` from a git repository, through the ``git`` binary: BuildKit's source syntax
(``https://host/repo.git#ref:subdir``, ``git://…``, ``ssh://…``, ``git@host:repo.git``),
the ref resolved to a commit by ``git ls-remote`` (the step's cache key), and a shallow
checkout of that commit as BuildKit makes it (no ``.git`` unless ``--keep-git-dir``; files
0644/0755, owned by root, dated at checkout time).

Every failure is a ``ContextError`` of one line naming the repository as written.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from builder.base.errors import ContextError

#: how long one git command may take (a host that drops packets is given up on)
TIMEOUT = 300
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@dataclass(frozen=True)
class GitSource:
    """One git source word, split; ``commit`` and ``fetch_ref`` once ``resolve``d."""

    text: str  # as written, for messages and history
    remote: str  # what git fetches from: the word without its ``#fragment``
    ref: str = ""  # as written after ``#``; "" is the remote's HEAD
    subdir: str = ""  # "" is the repository's root
    commit: str = ""
    fetch_ref: str = ""  # the full ref name ls-remote found (``refs/tags/v1``), "" for a commit
    keep_git_dir: bool = False

    @property
    def shown(self) -> str:
        """The source as written, a password in it hidden."""
        return _redact(self.text)

    def key(self) -> list[str]:
        """What the cache key sees: the commit, the subdir and the flag (and the remote, which
        a kept ``.git`` records as its origin)."""
        return [self.commit, self.subdir, "keep-git-dir" if self.keep_git_dir else "",
                self.remote if self.keep_git_dir else ""]


def parse(text: str, *, keep_git_dir: bool = False) -> GitSource | None:
    """*text* as a git source, or None when BuildKit would not read it as one."""
    remote, _, fragment = text.partition("#")
    if not _is_git(remote):
        return None
    ref, _, subdir = fragment.partition(":")
    parts = [p for p in subdir.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ContextError(f"ADD {_redact(text)}: the subdirectory {subdir!r} leaves the repository")
    return GitSource(text, remote, ref, "/".join(parts), keep_git_dir=keep_git_dir)


def _is_git(remote: str) -> bool:
    if remote.startswith("git@"):
        return ":" in remote[4:]
    u = urllib.parse.urlsplit(remote)
    if u.scheme in ("git", "ssh") and u.netloc:
        return True
    return u.scheme in ("http", "https") and bool(u.netloc) and u.path.endswith(".git")


def _redact(text: str) -> str:
    u = urllib.parse.urlsplit(text)
    if u.password is not None:
        host = u.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit(u._replace(netloc=f"{u.username}:xxxxx@{host}"))
    return text


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # never a prompt on the build's terminal: a repository that wants credentials fails
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true",
               GIT_SSH_COMMAND=env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
               LC_ALL="C")
    return env


def _git(src: GitSource, *args: str, cwd: Path | None = None, what: str) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=TIMEOUT)
    except FileNotFoundError:
        raise ContextError(f"ADD {src.shown}: git sources need the git binary, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise ContextError(f"ADD {src.shown}: {what}: no answer in {TIMEOUT} s") from None
    if r.returncode != 0:
        raise ContextError(f"ADD {src.shown}: {what}: {_one_line(r.stderr) or f'git exited {r.returncode}'}")
    return r.stdout


def _one_line(stderr: str) -> str:
    lines = [ln.strip().removeprefix("fatal: ").removeprefix("error: ").strip()
             for ln in stderr.splitlines()]
    return " ".join(ln for ln in lines if ln and not ln.startswith("hint:"))


def resolve(src: GitSource) -> GitSource:
    """*src* with the commit its ref names now (``git ls-remote``); a commit id is taken as is."""
    if _HEX.match(src.ref):
        return replace(src, commit=src.ref, fetch_ref="")
    want = src.ref or "HEAD"
    out = _git(src, "ls-remote", "--", src.remote, want, what="cannot read the repository")
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    # git's own order for a short name: as is, a tag (its commit, peeled), a branch
    for name in (want, f"refs/tags/{want}", f"refs/heads/{want}"):
        sha = found.get(f"{name}^{{}}") or found.get(name, "")
        if sha:
            return replace(src, commit=sha, fetch_ref=name)
    # BuildKit's words
    raise ContextError(f"ADD {src.shown}: repository does not contain ref {want}")


def checkout(src: GitSource, dest: Path) -> Path:
    """Fetch ``src.commit`` (shallow) into *dest* (a new directory) and check it out; return the
    directory ADD copies: the checkout, or its ``subdir``."""
    assert src.commit, "resolve() first"
    dest.mkdir(parents=True)
    _git(src, "init", "-q", str(dest), what="git init")
    _fetch(src, dest)
    _git(src, "-c", "advice.detachedHead=false", "checkout", "-q", src.commit, cwd=dest,
         what=f"cannot check out {src.commit}")
    if src.keep_git_dir:
        _git(src, "remote", "add", "origin", src.remote, cwd=dest, what="git remote add")
    else:
        shutil.rmtree(dest / ".git")
    _normalise_modes(dest)
    top = dest.joinpath(*src.subdir.split("/")) if src.subdir else dest
    real = os.path.realpath(top)
    if real != str(dest) and not real.startswith(str(dest) + "/"):
        raise ContextError(f"ADD {src.shown}: the subdirectory {src.subdir} leaves the repository")
    if not os.path.isdir(real):
        raise ContextError(f"ADD {src.shown}: no directory {src.subdir} in commit {src.commit}")
    return Path(real)


def _fetch(src: GitSource, dest: Path) -> None:
    what = "cannot fetch from the repository"
    if src.fetch_ref:
        # the ref as ls-remote saw it; if it moved since, the commit itself below
        _git(src, "fetch", "-q", "--depth=1", "--no-tags", "--", src.remote, src.fetch_ref,
             cwd=dest, what=what)
        head = _git(src, "rev-parse", "FETCH_HEAD^{commit}", cwd=dest, what=what).strip()
        if head == src.commit:
            return
    try:
        _git(src, "fetch", "-q", "--depth=1", "--no-tags", "--", src.remote, src.commit,
             cwd=dest, what=what)
    except ContextError:
        # a server that refuses a commit id in "want": all of its refs, then the commit
        _git(src, "fetch", "-q", "--no-tags", "--", src.remote, "+refs/heads/*:refs/remotes/origin/*",
             "+refs/tags/*:refs/tags/*", cwd=dest, what=what)
    r = subprocess.run(["git", "cat-file", "-e", f"{src.commit}^{{commit}}"], cwd=dest, env=_env(),
                       capture_output=True)
    if r.returncode != 0:
        raise ContextError(f"ADD {src.shown}: repository does not contain commit {src.commit}")


def _normalise_modes(top: Path) -> None:
    """Git records only "executable or not": 0755/0644 whatever the umask (as BuildKit's
    checkout); ``.git`` is left as git wrote it."""
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == str(top) and ".git" in dirnames:
            dirnames.remove(".git")
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o755 if st.st_mode & 0o111 else 0o644)

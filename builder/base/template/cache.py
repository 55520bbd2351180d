"""Parsed templates pickled under the grammar cache dir (``<cache>/templates/``), keyed by the
text, the name and the engine's own source: a script that runs the same ``--format`` again
never imports Lark (whose import costs more than the rest of a command's start-up).
Only templates that parsed are stored; a file that cannot be read is parsed again."""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

from builder.base.template import nodes as N
from grammar import cache_dir, grammar_path

try:  # CPython's own SHA-256, as registry.digest's: hashlib would load OpenSSL (~6 ms) for a key
    from _sha256 import sha256
except ImportError:  # another interpreter
    from hashlib import sha256

_ENGINE: str | None = None


def _engine_digest() -> str:
    """A hash of what a parse depends on: the grammar, the lexer, the glue, the nodes, the
    function names."""
    global _ENGINE
    if _ENGINE is None:
        here = Path(__file__).resolve().parent
        h = sha256()
        for path in (grammar_path("gotemplate"), here / "lex.py", here / "parse.py", here / "nodes.py",
                     here / "funcs.py"):
            h.update(path.read_bytes())
        _ENGINE = h.hexdigest()[:16]
    return _ENGINE


def _path(text: str, name: str) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    key = sha256(f"{_engine_digest()}\0{name}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()
    return directory / "templates" / f"{key[:32]}.pickle"


def load(text: str, name: str) -> N.Parsed | None:
    path = _path(text, name)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            found = pickle.load(f)
    except Exception:  # noqa: BLE001 - missing, corrupt or foreign: parse again
        return None
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], tuple) and isinstance(found[1], dict):
        return found
    return None


def store(text: str, name: str, nodes: N.Parsed) -> None:
    path = _path(text, name)
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(nodes, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        # an unwritable cache must never stop a command
        with contextlib.suppress(OSError):
            tmp.unlink()

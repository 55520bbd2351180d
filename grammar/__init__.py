"""The Lark grammars of pybuild and the one loader that builds (and caches) their parsers.

Compiled LALR tables are kept in the user cache dir so a fresh process skips grammar analysis.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# not ``typing.TYPE_CHECKING``: a cached ``--format`` listing imports no ``typing`` (~5 ms);
# checkers take this constant as theirs
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lark import Lark

_HERE = Path(__file__).resolve().parent
_PARSERS: dict[tuple[str, int, int], Lark] = {}


def grammar_path(name: str) -> Path:
    """The ``.lark`` file of grammar *name* (e.g. ``"dockerfile"``)."""
    return _HERE / f"{name}.lark"


def cache_dir() -> Path | None:
    """Where compiled tables go: ``$PYBUILD_GRAMMAR_CACHE``, else ``$XDG_CACHE_HOME/pybuild``
    or ``~/.cache/pybuild``; None when none of them can be created (then nothing is cached).

    Never a shared temporary directory: Lark's cache is a pickle, and loading one that
    another user could write would run their code.
    """
    explicit = os.environ.get("PYBUILD_GRAMMAR_CACHE")
    if explicit is not None:
        candidates = [Path(explicit)] if explicit else []
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(base) / "pybuild"]
    for candidate in candidates:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


def load(name: str, *, lexer: type[Any], transformer: Any = None) -> Lark:
    """The LALR parser of grammar *name*, built once per process and cached on disk.

    *lexer* is the Lark ``Lexer`` subclass that feeds the grammar its tokens; *transformer*
    (optional) runs inline while parsing, so no parse tree is built.
    """
    key = (name, id(lexer), id(transformer))
    parser = _PARSERS.get(key)
    if parser is not None:
        return parser
    from lark import Lark

    text = grammar_path(name).read_text(encoding="utf-8")
    directory = cache_dir()
    if directory is None:
        parser = Lark(text, parser="lalr", lexer=lexer, transformer=transformer)
    else:
        parser = _cached(directory, name, text, lexer, transformer)
    _PARSERS[key] = parser
    return parser


def _cached(directory: Path, name: str, text: str, lexer: type[Any], transformer: Any) -> Lark:
    """Load the compiled parser from *directory*, or build it and save it there.

    The file is named after a hash of everything the tables depend on (the grammar, the
    Lark and Python versions, the lexer class), so a stale file is never read; it is written
    under a private name and renamed, so a concurrent reader never sees half of it.
    """
    import hashlib
    import sys

    from lark import Lark
    from lark import __version__ as lark_version

    key = "\0".join(
        [text, lark_version, sys.version.split()[0], f"{lexer.__module__}.{lexer.__qualname__}"]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    final = directory / f"grammar-{name}-{digest}.lark-cache"
    try:
        with open(final, "rb") as f:
            # Lark.load() takes no options; _load() is what Lark's own cache= uses to attach
            # the inline transformer to deserialised tables
            loaded: Lark = Lark.__new__(Lark)._load(f, transformer=transformer)
            return loaded
    except FileNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - a corrupt or foreign cache file: rebuild it
        pass
    parser = Lark(text, parser="lalr", lexer=lexer, transformer=transformer)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            parser.save(f)
        os.replace(tmp, final)
    except OSError:
        # an unwritable cache must never stop a parse
        with contextlib.suppress(OSError):
            tmp.unlink()
    return parser

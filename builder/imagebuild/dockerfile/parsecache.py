"""A disk cache of typed Dockerfiles, keyed by the text, the file name and the front end's source.

A rebuild of an unchanged Dockerfile then skips Lark (import and parse) and the typing pass.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

from builder.imagebuild import sha
from builder.imagebuild.dockerfile.instructions import Dockerfile, load

# the source tree (``builder/``'s parent), by this module's dotted name rather than a fixed depth
_TREE = Path(__file__).resolve().parents[__name__.count(".")]
# everything a parse result depends on: a change to any of them is a new key, never a stale hit
_SOURCES = (
    *(_TREE / name for name in ("builder/imagebuild/dockerfile/syntax.py", "builder/imagebuild/dockerfile/larkglue.py",
                                "builder/imagebuild/dockerfile/tree.py", "builder/base/units.py",
                                "grammar/dockerfile.lark",
                                "registry/values.py")),  # (how the records are made: frozen values)
    *sorted((_TREE / "builder/imagebuild/dockerfile/instructions").glob("*.py")),
)
_FRONT_END: str | None = None


def _front_end() -> str:
    global _FRONT_END
    if _FRONT_END is None:
        h = sha.sha256()
        for src in _SOURCES:
            h.update(src.read_bytes())
            h.update(b"\0")
        _FRONT_END = h.hexdigest()
    return _FRONT_END


def load_cached(text: str, *, filename: str, directory: Path) -> Dockerfile:
    """``load(text, filename=filename)``, served from *directory* when it parsed before.

    Only successful parses are stored, so errors are raised (and worded) exactly as ``load``
    does; an unreadable or damaged entry is a miss; entries are written under a private name
    and renamed, so a concurrent reader never sees half of one. *directory* lies in the state
    root, which only its owner can write: the pickle is as trusted as the rest of the state.
    """
    key = sha.sha256(
        "\0".join(("v1", _front_end(), filename, text)).encode("utf-8", "surrogatepass")
    ).hexdigest()
    entry = directory / f"{key}.pickle"
    try:
        with open(entry, "rb") as f:
            found = pickle.load(f)
        if isinstance(found, Dockerfile):
            # the mtime says "last used": ``builder prune`` drops entries unused for 48 hours
            with contextlib.suppress(OSError):
                os.utime(entry)
            return found
    except FileNotFoundError:
        pass
    except Exception:  # noqa: BLE001 - a damaged entry is a miss; it is rewritten below
        pass
    dockerfile = load(text, filename=filename)
    tmp = directory / f".{entry.name}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            pickle.dump(dockerfile, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, entry)
    except (OSError, pickle.PicklingError, RecursionError):
        # an unwritable cache never stops a build
        with contextlib.suppress(OSError):
            tmp.unlink()
    return dockerfile

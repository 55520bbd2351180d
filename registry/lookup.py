"""How a name finds a store entry: a reference, ``name@digest``, an image ID or its prefix, as
Docker resolves them; an index's platform images are found by their own IDs too.

Pure functions over ``index.json`` entries; ``Store.find`` is their one caller.
"""

from __future__ import annotations

from collections.abc import Callable

from registry.errors import InvalidReference, NotFound
from registry.model import Descriptor
from registry.reference import Reference

REF_NAME = "org.opencontainers.image.ref.name"
IMAGE_ID = "io.pybuild.image.id"

#: an index entry's platform manifests as (manifest descriptor, config digest text)
Children = Callable[[Descriptor], list[tuple[Descriptor, str]]]


def find(entries: list[Descriptor], text: str, children: Children) -> tuple[Descriptor, bool]:
    """The entry *text* names, and whether it named it by ID. A full 64-hex or ``sha256:`` form
    is always an ID; any other valid reference is tried as one first, then as an ID prefix.
    An ID that is one platform's of an index gives that platform's manifest, tagged as the
    index is."""
    ident = text.removeprefix("sha256:")
    is_hex = 3 <= len(ident) <= 64 and all(c in "0123456789abcdef" for c in ident)
    if is_hex and (text.startswith("sha256:") or len(ident) == 64):
        return by_id(entries, text, ident, children), True
    try:
        ref = Reference.parse(text)
    except InvalidReference:
        if ":" in text or "/" in text or text.lower() != text:
            raise
        raise NotFound(f"No such image: {text}") from None
    found = by_reference(entries, ref)
    if found is not None:
        return found, False
    if is_hex:
        return by_id(entries, text, ident, children), True
    raise NotFound(f"No such image: {ref.familiar}")


def by_id(entries: list[Descriptor], text: str, ident: str, children: Children) -> Descriptor:
    def hit(i: str | None) -> bool:
        return bool(i) and (i or "").removeprefix("sha256:").startswith(ident)

    by_ids = {e.annotation(IMAGE_ID): e for e in entries}
    hits = [e for i, e in by_ids.items() if hit(i)]
    if not hits:  # one platform of an index (``run --platform`` records that image's ID)
        seen: dict[str, Descriptor] = {}
        for e in entries:
            for child, config in children(e):
                if hit(config) and config not in seen:
                    seen[config] = child.with_annotations(
                        **{REF_NAME: e.annotation(REF_NAME), IMAGE_ID: config})
        hits = list(seen.values())
    if len(hits) > 1:
        raise NotFound(f"ambiguous image ID prefix: {text}")
    if not hits:
        raise NotFound(f"No such image: {text}")
    return hits[0]


def by_reference(entries: list[Descriptor], ref: Reference) -> Descriptor | None:
    """The entry tagged *ref* (``name@digest``: tagged so, or a tag of that manifest)."""
    for e in entries:
        if ref.digest is not None:
            if e.annotation(REF_NAME) == str(ref) or (  # pulled by digest: tagged name@digest
                    e.digest == ref.digest and (e.annotation(REF_NAME) or "").startswith(ref.name + ":")):
                return e
        elif e.annotation(REF_NAME) == str(ref):
            return e
    if ref.digest is not None:
        for e in entries:
            if e.digest == ref.digest:
                return e
    return None


__all__ = ["by_id", "by_reference", "find"]

"""``parse_end``: the end of a copy a text names (``docker://``, a registry reference, ``oci:``,
``oci-archive:``, ``docker-archive:``, ``local:`` or a bare local name)."""

from __future__ import annotations

from pathlib import Path

from registry.errors import InvalidReference, StoreError
from registry.reference import Reference
from registry.store import Store
from registry.transfer.ends import ClientOptions, End, LayoutEnd, StoreEnd, remote_end


def _has_registry_host(text: str) -> bool:
    first, sep, _ = text.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def parse_end(text: str, *, store: Store | None = None, tls_verify: bool = True,
              client_options: ClientOptions | None = None, role: str = "source") -> End:
    """An end from text:

    - ``docker://REF`` or a reference naming a registry host (``host[:port]/repo[:tag]``):
      a registry repository;
    - ``oci:DIR[:tag]``: an OCI image layout directory;
    - ``oci-archive:FILE[:tag]``, ``docker-archive:FILE[:name:tag]``: image tarballs;
    - ``local:NAME`` (also ``containers-storage:NAME``), or a bare name without a registry host
      (``busybox``, ``app:1``, an image ID): the local store.
    """
    if text.startswith("docker://"):
        return remote_end(text[len("docker://"):], tls_verify=tls_verify, options=client_options)
    if text.startswith("oci:"):
        rest = text[4:]
        path, tag = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and head and "/" not in tail:
            path, tag = head, tail
        if not path:
            raise InvalidReference(f"invalid destination {text!r}: oci:DIR[:tag] needs a directory")
        return LayoutEnd(Path(path), tag)
    if text.startswith(("oci-archive:", "docker-archive:")):
        from registry.transfer.archives import parse_archive  # tar code, for archives only

        found = parse_archive(text, role)
        assert found is not None
        return found
    local = next((text[len(p):] for p in ("local:", "containers-storage:") if text.startswith(p)),
                 None)
    if local is None and _has_registry_host(text):
        return remote_end(text, tls_verify=tls_verify, options=client_options)
    if store is None:
        raise StoreError(f"{text}: no local store to copy from or to")
    return _store_end(store, text if local is None else local, role)


def _store_end(store: Store, name: str, role: str) -> StoreEnd:
    if not name:
        raise InvalidReference("invalid local image name: empty")
    ref: Reference | None = None
    if role == "destination":
        ref = Reference.parse(name)
    return StoreEnd(store, name, ref)

"""BuildKit's ``--cache-to``/``--cache-from`` words: ``type=registry,ref=…,mode=max``,
``type=local,dest=DIR``/``src=DIR``, ``type=inline``; a bare reference is a registry source."""

from __future__ import annotations

from dataclasses import dataclass

from builder.base.errors import BuildError
from registry.errors import RegistryError
from registry.reference import Reference

_TYPES = ("registry", "local", "inline")


@dataclass(frozen=True)
class CacheSpec:
    type: str
    ref: str = ""
    #: the OCI layout directory of ``type=local`` (``dest`` to export, ``src`` to import)
    path: str = ""
    mode: str = "min"
    compression: str = "gzip"
    #: export (and restore) the contents of ``RUN --mount=type=cache`` directories
    cache_mounts: bool = False
    text: str = ""

    @property
    def name(self) -> str:
        """Where a hit came from, as progress shows it (``registry HOST/REPO:TAG``)."""
        if self.type == "registry":
            return f"registry {self.ref}"
        if self.type == "local":
            return f"local {self.path}"
        return "inline"


def parse_cache_spec(text: str, *, export: bool) -> CacheSpec:
    flag = "--cache-to" if export else "--cache-from"
    fields: dict[str, str] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            if part and "," not in text and not export:
                return CacheSpec("registry", ref=_reference(part, text, flag), text=text)
            raise BuildError.invalid(f"invalid {flag} {text!r}: expected key=value pairs")
        fields[k.strip()] = v.strip()
    kind = fields.pop("type", "registry")
    if kind not in _TYPES:
        raise BuildError.invalid(f"invalid {flag} {text!r}: unknown type {kind!r} "
                                 f"(registry, local or inline)")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise BuildError.invalid(f"invalid {flag} {text!r}: mode must be min or max")
    compression = fields.pop("compression", "gzip")
    if compression not in ("gzip", "zstd", "uncompressed"):
        raise BuildError.invalid(f"invalid {flag} {text!r}: compression must be gzip, zstd or uncompressed")
    mounts = fields.pop("cache-mounts", "false").lower()
    if mounts not in ("true", "false", "1", "0"):
        raise BuildError.invalid(f"invalid {flag} {text!r}: cache-mounts must be true or false")
    ref = path = ""
    if kind == "registry":
        ref = _reference(fields.pop("ref", ""), text, flag)
    elif kind == "local":
        path = fields.pop("dest" if export else "src", "")
        if not path:
            raise BuildError.invalid(f"invalid {flag} {text!r}: {'dest' if export else 'src'} is required")
    elif not export:
        raise BuildError.invalid(f"invalid {flag} {text!r}: an inline cache is read with "
                                 f"type=registry,ref=IMAGE")
    for ignored in ("image-manifest", "oci-mediatypes", "ignore-error", "name", "tag",
                    "force-compression", "compression-level", "dest", "src"):
        fields.pop(ignored, None)
    if fields:
        raise BuildError.invalid(f"invalid {flag} {text!r}: unknown key {sorted(fields)[0]!r}")
    return CacheSpec(kind, ref=ref, path=path, mode=mode,
                     compression="none" if compression == "uncompressed" else compression,
                     cache_mounts=mounts in ("true", "1"), text=text)


def _reference(ref: str, text: str, flag: str) -> str:
    if not ref:
        raise BuildError.invalid(f"invalid {flag} {text!r}: ref is required")
    try:
        return str(Reference.parse(ref))
    except RegistryError as e:
        raise BuildError.invalid(f"invalid {flag} {text!r}: {e}") from None


def parse_cache_specs(texts: tuple[str, ...] | list[str], *, export: bool) -> tuple[CacheSpec, ...]:
    return tuple(parse_cache_spec(t, export=export) for t in texts)

"""Frozen OCI objects that keep the exact bytes they came from: their digest is sha256 of those.

``Descriptor``, ``Platform``, ``Manifest``, ``Index`` and ``ImageConfig``. Build new ones with the
``build``/``with_*`` constructors, which serialise once, canonically (sorted keys, no spaces).
"""

from __future__ import annotations

import json
import os

from registry import mediatypes as mt
from registry.digest import Digest
from registry.errors import DigestError, InvalidManifest
from registry.values import frozen

TYPE_CHECKING = False  # not ``typing``'s: a hot path loads no ``typing`` (~5 ms)
if TYPE_CHECKING:  # ``ContainerConfig`` is imported by ``container_config``: a listing reads no config
    from typing import Any

    from registry.config import ContainerConfig


def canonical_json(obj: Any) -> bytes:
    """The one serialisation we write: sorted keys, compact, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidManifest(f"{what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidManifest(f"{what} is not a JSON object")
    return data


_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "armv7l": "arm", "armv6l": "arm", "i686": "386", "i386": "386",
           "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


# frozen values, not dataclasses: every command that reads the store loads this module, and a
# dataclass execs its generated methods at import
@frozen
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine  # ``platform.machine()``'s answer, without its import
        arch = _GOARCH.get(machine, machine)
        variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}.get(machine)
        return cls("linux", arch, None if arch == "arm64" else variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as ``--platform`` takes it."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Platform:
        return cls(
            os=str(d.get("os", "")),
            architecture=str(d.get("architecture", "")),
            variant=d.get("variant"),
            os_version=d.get("os.version"),
            os_features=tuple(d.get("os.features", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        return d

    def matches(self, other: Platform) -> bool:
        """Same os and architecture, and the same variant when both name one."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not (self.variant and other.variant and self.variant != other.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@frozen
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=str(d["mediaType"]),
                digest=Digest.parse(str(d["digest"])),
                size=int(d["size"]),
                annotations=tuple(sorted((d.get("annotations") or {}).items())),
                platform=Platform.from_dict(d["platform"]) if d.get("platform") else None,
                urls=tuple(d.get("urls") or ()),
                artifact_type=d.get("artifactType"),
            )
        except (KeyError, TypeError, ValueError, DigestError) as e:
            raise InvalidManifest(f"invalid descriptor {d!r}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform:
            d["platform"] = self.platform.to_dict()
        if self.urls:
            d["urls"] = list(self.urls)
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def with_annotations(self, **updates: str | None) -> Descriptor:
        ann = dict(self.annotations)
        for k, v in updates.items():
            if v is None:
                ann.pop(k, None)
            else:
                ann[k] = v
        return Descriptor(self.media_type, self.digest, self.size, tuple(sorted(ann.items())),
                          self.platform, self.urls, self.artifact_type)

    def with_platform(self, platform: Platform | None) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size, self.annotations, platform,
                          self.urls, self.artifact_type)


class _Raw:
    """A JSON document kept as the exact bytes it was read or written as: frozen, equal (to one
    of its own class) and hashed by those bytes, whatever ``data`` (their parse) holds.
    (A plain class, not a dataclass, for the reason ``Descriptor`` is a frozen value.)"""

    __slots__ = ("raw", "data")
    raw: bytes
    data: dict[str, Any]

    def __init__(self, raw: bytes, data: dict[str, Any]) -> None:
        object.__setattr__(self, "raw", raw)
        object.__setattr__(self, "data", data)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(raw={self.raw!r})"

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    @property
    def size(self) -> int:
        return len(self.raw)


class Manifest(_Raw):
    """An image manifest (OCI or Docker schema 2)."""

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Manifest:
        data = _load(raw, "manifest")
        mtype = data.get("mediaType") or media_type or mt.OCI_MANIFEST
        if mtype not in mt.MANIFESTS:
            raise InvalidManifest(f"not an image manifest: mediaType {mtype!r}")
        if data.get("schemaVersion") != 2:
            raise InvalidManifest("manifest schemaVersion must be 2")
        if "config" not in data or not isinstance(data.get("layers"), list):
            raise InvalidManifest("manifest needs config and layers")
        m = cls(raw, data)
        m.config  # noqa: B018 - validates the descriptors once, at the edge
        m.layers  # noqa: B018
        return m

    @classmethod
    def build(
        cls,
        config: Descriptor,
        layers: list[Descriptor],
        *,
        media_type: str = mt.OCI_MANIFEST,
        annotations: dict[str, str] | None = None,
    ) -> Manifest:
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.to_dict(),
            "layers": [layer.to_dict() for layer in layers],
        }
        if annotations:
            data["annotations"] = annotations
        raw = json.dumps(data, indent=2).encode() if media_type == mt.DOCKER_MANIFEST else canonical_json(data)
        return cls(raw, json.loads(raw))

    @property
    def media_type(self) -> str:
        return str(self.data.get("mediaType") or mt.OCI_MANIFEST)

    @property
    def config(self) -> Descriptor:
        return Descriptor.from_dict(self.data["config"])

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_dict(d) for d in self.data["layers"]]

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.data.get("annotations") or {})

    def descriptor(self, **annotations: str) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size,
                          tuple(sorted(annotations.items())))


class Index(_Raw):
    """An OCI image index or a Docker manifest list."""

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None) -> Index:
        data = _load(raw, "index")
        mtype = data.get("mediaType") or media_type or mt.OCI_INDEX
        if mtype not in mt.INDEXES:
            raise InvalidManifest(f"not an image index: mediaType {mtype!r}")
        if not isinstance(data.get("manifests"), list):
            raise InvalidManifest("index needs a manifests list")
        i = cls(raw, data)
        i.manifests  # noqa: B018
        return i

    @classmethod
    def build(cls, manifests: list[Descriptor], *, media_type: str = mt.OCI_INDEX,
              annotations: dict[str, str] | None = None) -> Index:
        data: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [m.to_dict() for m in manifests],
        }
        if annotations:
            data["annotations"] = annotations
        raw = canonical_json(data)
        return cls(raw, json.loads(raw))

    @property
    def media_type(self) -> str:
        return str(self.data.get("mediaType") or mt.OCI_INDEX)

    @property
    def manifests(self) -> list[Descriptor]:
        return [Descriptor.from_dict(d) for d in self.data["manifests"]]

    def select(self, platform: Platform) -> Descriptor | None:
        """The first manifest for *platform* (host platform first, as Docker picks)."""
        for d in self.manifests:
            if d.platform and d.platform.matches(platform):
                return d
        return None

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)


def parse_manifest_or_index(raw: bytes, media_type: str | None = None) -> Manifest | Index:
    """Decide by the document's own ``mediaType`` (or the transport's), else by its shape."""
    data = _load(raw, "manifest")
    mtype = data.get("mediaType") or media_type
    if mtype in mt.INDEXES or (mtype is None and "manifests" in data):
        return Index.parse(raw, mtype)
    return Manifest.parse(raw, mtype)


class ImageConfig(_Raw):
    """The image configuration: ``config`` (Env, Cmd, …), ``rootfs.diff_ids``, ``history``."""

    @classmethod
    def parse(cls, raw: bytes) -> ImageConfig:
        data = _load(raw, "image config")
        if "rootfs" in data and not isinstance(data["rootfs"], dict):
            raise InvalidManifest("image config rootfs must be an object")
        return cls(raw, data)

    @classmethod
    def build(cls, data: dict[str, Any]) -> ImageConfig:
        raw = canonical_json(data)
        return cls(raw, json.loads(raw))

    def with_changes(self, **top: Any) -> ImageConfig:
        """A new config with top-level keys replaced (``None`` removes a key)."""
        data = json.loads(self.raw)
        for k, v in top.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        return ImageConfig.build(data)

    @property
    def config(self) -> dict[str, Any]:
        """The container defaults (``Env``, ``Cmd``, ``Entrypoint``, ``WorkingDir``, ``User``…)."""
        return dict(self.data.get("config") or {})

    @property
    def container_config(self) -> ContainerConfig:
        """``config`` as a typed value (``to_json()`` gives back exactly the stored object)."""
        from registry.config import ContainerConfig

        return ContainerConfig.from_json(self.data.get("config") or {})

    @property
    def diff_ids(self) -> list[Digest]:
        return [Digest.parse(d) for d in (self.data.get("rootfs") or {}).get("diff_ids", [])]

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.data.get("history") or [])

    @property
    def created(self) -> str | None:
        return self.data.get("created")

    @property
    def platform(self) -> Platform:
        return Platform(str(self.data.get("os", "linux")), str(self.data.get("architecture", "")),
                        self.data.get("variant"))

    @property
    def image_id(self) -> Digest:
        """Docker's image ID: the config digest."""
        return self.digest

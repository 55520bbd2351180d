"""The one error tree of ``registry``: what a caller of the store, archives or client handles.

    RegistryError                  base; ``str()`` is a one-line message
    ├── InvalidReference           a reference that does not parse (with the reason)
    ├── DigestError                bytes that do not hash to what was expected, bad digest text
    ├── InvalidManifest            JSON that is not a manifest/index/config we understand
    ├── NotFound                   blob, manifest, tag or image unknown (locally or remotely)
    │   ├── ManifestUnknown
    │   ├── BlobUnknown
    │   └── NameUnknown
    ├── Unauthorized               401, or a credential that the registry refused
    ├── CredentialHelperError      a ``docker-credential-<name>`` helper is missing or failed
    ├── Denied                     403
    ├── ArchiveError               a tarball that is not a docker- or oci-archive, or is cut short
    ├── StoreError                 the local store refuses (image in use, lock, layout damage)
    └── TransportError             network faults and 5xx; ``retryable`` says whether to try again
        └── TooManyRequests        429, with ``retry_after`` seconds when the server said

Every class has a ``kind`` (``registry.kinds.ErrorKind``: what the caller does about it); a
raise may give its own (``StoreError.conflict(...)``) where one class covers several.
"""

from __future__ import annotations

from registry.kinds import ErrorKind, Kinded


class RegistryError(Kinded):
    """Base of every error raised by ``registry``."""

    retryable: bool = False
    kind: ErrorKind = ErrorKind.SYSTEM


class InvalidReference(RegistryError):
    kind = ErrorKind.INVALID


class DigestError(RegistryError):
    kind = ErrorKind.INVALID


class InvalidManifest(RegistryError):
    kind = ErrorKind.INVALID


class NotFound(RegistryError):
    kind = ErrorKind.NOT_FOUND


class ManifestUnknown(NotFound):
    pass


class BlobUnknown(NotFound):
    pass


class NameUnknown(NotFound):
    pass


class Unauthorized(RegistryError):
    kind = ErrorKind.UNAUTHORIZED


class CredentialHelperError(RegistryError):
    kind = ErrorKind.FORBIDDEN


class Denied(RegistryError):
    kind = ErrorKind.FORBIDDEN


class ArchiveError(RegistryError):
    kind = ErrorKind.INVALID


class StoreError(RegistryError):
    pass


class TransportError(RegistryError):
    kind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class TooManyRequests(TransportError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=True, status=429)
        self.retry_after = retry_after

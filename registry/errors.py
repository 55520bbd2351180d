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
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error raised by ``registry``."""

    retryable: bool = False


class InvalidReference(RegistryError):
    pass


class DigestError(RegistryError):
    pass


class InvalidManifest(RegistryError):
    pass


class NotFound(RegistryError):
    pass


class ManifestUnknown(NotFound):
    pass


class BlobUnknown(NotFound):
    pass


class NameUnknown(NotFound):
    pass


class Unauthorized(RegistryError):
    pass


class CredentialHelperError(RegistryError):
    pass


class Denied(RegistryError):
    pass


class ArchiveError(RegistryError):
    pass


class StoreError(RegistryError):
    pass


class TransportError(RegistryError):
    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class TooManyRequests(TransportError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=True, status=429)
        self.retry_after = retry_after

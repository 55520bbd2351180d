"""The OCI distribution API over the standard library's ``http.client`` (``transport.py``): ping,
auth, manifests, streamed blobs with resume, monolithic and chunked uploads with resume,
cross-repository mounts, tags, retries with backoff.

``RegistryClient`` (``http.py``) is one registry host (scheme, TLS, credentials, pooled
session); its ``repository(path)`` is a ``Repository`` (``repository.py``), the remote end of
``registry.transfer.copy``; ``tls.py`` finds CAs and client certificates in ``certs.d``.
"""

from registry.client.http import (
    DEFAULT_CHUNK,
    MANIFEST_ACCEPT,
    MONOLITHIC_MAX,
    Backoff,
    RegistryClient,
    RetryHook,
    client_for,
    error_for,
    retry_after,
)
from registry.client.repository import BlobReader, Fetched, Repository
from registry.client.tls import TLSSettings, certs_dirs, insecure_registries, is_loopback

__all__ = ["RegistryClient", "Repository", "Fetched", "BlobReader", "Backoff", "RetryHook",
           "TLSSettings", "client_for", "error_for", "retry_after", "certs_dirs", "is_loopback",
           "insecure_registries", "MANIFEST_ACCEPT", "DEFAULT_CHUNK", "MONOLITHIC_MAX"]

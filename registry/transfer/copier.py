"""``copy(src, dst)``: blobs the destination lacks (concurrently, mounting where it can), then
manifests, then the root; ``pull``/``push`` are copies between the store and a registry."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from registry.client import Fetched
from registry.digest import Digest
from registry.errors import (
    InvalidManifest,
    NotFound,
)
from registry.model import Descriptor, Index, Manifest, Platform, parse_manifest_or_index
from registry.reference import Reference
from registry.store import Image, Store
from registry.transfer.ends import (
    DEFAULT_CONCURRENCY,
    ClientOptions,
    End,
    LayoutEnd,
    RemoteEnd,
    StoreEnd,
    remote_end,
)
from registry.transfer.events import CopyResult, Event, Progress, no_progress


class NoMatchingManifest(NotFound):
    """An index without the platform asked for (Docker's words, which ``docker pull`` prints
    alone as the last line of its output)."""


def _parse(doc: Fetched) -> Manifest | Index:
    return parse_manifest_or_index(doc.raw, doc.media_type or None)


def _media_type(doc: Fetched, parsed: Manifest | Index) -> Fetched:
    """The media type a document declares for itself wins over what the transport said."""
    return Fetched(doc.raw, parsed.media_type, doc.digest)


def copy(
    src: End,
    dst: End,
    *,
    platform: Platform | None = None,
    all_platforms: bool = False,
    max_concurrent: int = DEFAULT_CONCURRENCY,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy the image at *src* to *dst*: blobs the destination lacks (concurrently, mounting
    across repositories where it can), then manifests, then the root under *dst*'s tag.

    From an index: the manifest for *platform* (the host's by default), or the whole index
    with ``all_platforms``. A failure leaves a local destination as it was.
    """
    report = progress or no_progress
    dst.as_destination()
    dst.begin(report)
    src.begin(report)
    ok = False
    try:
        result = _copy(src, dst, platform, all_platforms, max(max_concurrent, 1), report)
        ok = True
        return result
    finally:
        dst.end(ok)
        src.end(ok)


def _copy(src: End, dst: End, platform: Platform | None, all_platforms: bool,
          workers: int, report: Progress) -> CopyResult:
    top = src.resolve()
    top_doc = _parse(top)
    top = _media_type(top, top_doc)
    manifests: list[tuple[Fetched, Manifest]] = []
    if isinstance(top_doc, Index):
        if all_platforms:
            root = top
            children = top_doc.manifests
        else:
            want = platform or Platform.host()
            chosen = top_doc.select(want)
            if chosen is None:
                raise NoMatchingManifest(f"no matching manifest for {want} in the manifest list entries")
            children = [chosen]
            root = None
        for child in children:
            fetched = src.get_manifest(child)
            doc = _parse(fetched)
            if not isinstance(doc, Manifest):
                raise InvalidManifest(f"{src.describe()}: nested index {child.digest} is not supported")
            manifests.append((_media_type(fetched, doc), doc))
        if root is None:
            root = manifests[0][0]
    else:
        root = top
        manifests.append((top, top_doc))

    blobs: list[Descriptor] = []
    seen: set[Digest] = set()
    for _, m in manifests:
        for d in [m.config, *m.layers]:
            if d.digest not in seen:
                seen.add(d.digest)
                blobs.append(d)

    stats = _Stats()
    _copy_blobs(src, dst, blobs, workers, report, stats)
    for fetched, _ in manifests:
        if fetched is not root:
            dst.put_manifest(fetched, root=False)
            report(Event("manifest", fetched.digest, len(fetched.raw), media_type=fetched.media_type))
    desc = dst.put_manifest(root, root=True)
    report(Event("manifest", root.digest, len(root.raw), media_type=root.media_type,
                 detail=getattr(getattr(dst, "reference", None), "tag", None) or ""))
    _note_sources(src, dst, blobs)
    return CopyResult(top.digest, desc, stats.copied, stats.existing, stats.mounted, stats.bytes)


class _Stats:
    """What a copy did with its blobs (counted by the workers under ``lock``)."""

    def __init__(self) -> None:
        self.copied = 0
        self.existing = 0
        self.mounted = 0
        self.bytes = 0
        self.lock = threading.Lock()


class _Cancelled(Exception):
    pass


def _copy_blobs(src: End, dst: End, blobs: list[Descriptor], workers: int, report: Progress,
                stats: _Stats) -> None:
    cancel = threading.Event()

    def one(desc: Descriptor) -> None:
        if cancel.is_set():
            raise _Cancelled()
        if dst.has_blob(desc):
            report(Event("exists", desc.digest, desc.size, desc.size, desc.media_type))
            with stats.lock:
                stats.existing += 1
            return
        for source in _mount_candidates(src, dst, desc):
            if dst.try_mount(desc, source):
                report(Event("mounted", desc.digest, desc.size, desc.size, desc.media_type,
                             source.partition("/")[2]))
                with stats.lock:
                    stats.mounted += 1
                return
        report(Event("start", desc.digest, desc.size, 0, desc.media_type))

        def on_bytes(n: int) -> None:
            if cancel.is_set():
                raise _Cancelled()
            report(Event("progress", desc.digest, desc.size, n, desc.media_type))

        dst.put_blob(desc, src, on_bytes)
        report(Event("done", desc.digest, desc.size, desc.size, desc.media_type))
        with stats.lock:
            stats.copied += 1
            stats.bytes += desc.size

    if workers == 1 or len(blobs) <= 1:
        for d in blobs:
            one(d)
        return
    _on_threads(one, blobs, workers, cancel)


def _on_threads(one: Callable[[Descriptor], None], blobs: list[Descriptor], workers: int,
                cancel: threading.Event) -> None:
    """``one(blob)`` for every blob on *workers* threads (plain threads: ``concurrent.futures``
    would bring ``logging`` to every pull and push). The first error sets *cancel*, which stops
    the others at their next chunk, and is raised once they have stopped (an error other than
    the cancellation itself wins)."""
    todo = iter(blobs)
    lock = threading.Lock()
    errors: list[BaseException] = []
    threads = min(workers, len(blobs))
    running = [threads]
    # set by the last worker to stop; waited on, not joined: a join interrupted by Ctrl-C
    # marks a live thread as stopped (Python 3.11), and it would not be waited for
    finished = threading.Event()

    def work() -> None:
        try:
            while not cancel.is_set():
                with lock:
                    desc = next(todo, None)
                if desc is None:
                    return
                try:
                    one(desc)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    errors.append(e)
                    cancel.set()
                    return
        finally:
            with lock:
                running[0] -= 1
                if not running[0]:
                    finished.set()

    for i in range(threads):
        threading.Thread(target=work, name=f"pybuild-blob_{i}").start()
    try:
        # in slices: a Ctrl-C whose SIGINT the kernel handed to a worker thread reaches this
        # (main) thread only when it wakes up
        while not finished.wait(0.2):
            pass
    except BaseException:  # Ctrl-C: stop the workers at their next chunk, not at blob end
        cancel.set()
        finished.wait()
        raise
    if errors:
        real = [e for e in errors if not isinstance(e, _Cancelled)]
        raise (real or errors)[0]


def _mount_candidates(src: End, dst: End, desc: Descriptor) -> list[str]:
    if not isinstance(dst, RemoteEnd):
        return []
    out: list[str] = []
    if isinstance(src, RemoteEnd) and src.repo.host == dst.repo.host and src.repo.path != dst.repo.path:
        out.append(f"{src.repo.host}/{src.repo.path}")
    out += [s for s in src.mount_sources(desc) if s not in out]
    return [s for s in out if s.partition("/")[0] == dst.repo.host
            and s.partition("/")[2] != dst.repo.path][:3]


def _note_sources(src: End, dst: End, blobs: list[Descriptor]) -> None:
    """Remember where the blobs live remotely, for later cross-repository mounts."""
    remote = src if isinstance(src, RemoteEnd) else dst if isinstance(dst, RemoteEnd) else None
    local = dst if isinstance(dst, StoreEnd) else src if isinstance(src, StoreEnd) else None
    if remote is None or local is None or isinstance(local, LayoutEnd):
        return
    for d in blobs:
        local.sources.note(d.digest, f"{remote.repo.host}/{remote.repo.path}")
    with contextlib.suppress(OSError):
        local.sources.save()


# -- library calls -----------------------------------------------------------------------------
def pull(
    store: Store,
    reference: Reference | str,
    *,
    platform: Platform | None = None,
    progress: Progress | None = None,
    tls_verify: bool = True,
    all_platforms: bool = False,
    max_concurrent: int = DEFAULT_CONCURRENCY,
) -> Image:
    """Pull an image into *store* (tagged as the reference names it) and return it resolved for
    *platform*. Used by ``FROM`` for an image missing locally and by ``run --pull``. Text is
    parsed once, here; a ``Reference`` goes through as is."""
    image, _ = pull_result(store, reference, platform=platform, progress=progress,
                           tls_verify=tls_verify, all_platforms=all_platforms,
                           max_concurrent=max_concurrent)
    return image


def pull_result(store: Store, reference: Reference | str, **kwargs: Any) -> tuple[Image, CopyResult]:
    """``pull``, also returning the ``CopyResult`` (the CLI prints its digest and counts)."""
    ref = reference if isinstance(reference, Reference) else Reference.parse(reference)
    end = remote_end(ref, tls_verify=kwargs.pop("tls_verify", True),
                     options=kwargs.pop("client_options", None))
    platform = kwargs.get("platform")
    try:
        result = copy(end, StoreEnd(store, str(ref), ref, distributed=True), **kwargs)
    finally:
        end.repo.client.close()
    return store.image(result.descriptor, platform=platform, reference=ref), result


def push(
    store: Store,
    name: str,
    destination: Reference | str | None = None,
    *,
    progress: Progress | None = None,
    tls_verify: bool = True,
    max_concurrent: int = DEFAULT_CONCURRENCY,
    client_options: ClientOptions | None = None,
) -> CopyResult:
    """Push the local image *name* to *destination* (default: the reference *name* itself);
    every platform of a stored index goes up."""
    target = destination or name
    end = remote_end(target, tls_verify=tls_verify, options=client_options)
    end.repo.want_push()
    try:
        result = copy(StoreEnd(store, name), end, all_platforms=True,
                      max_concurrent=max_concurrent, progress=progress)
    finally:
        end.repo.client.close()
    # Docker's RepoDigests: the pushed tag's digest, once the registry has it
    pushed = target if isinstance(target, Reference) else Reference.parse(target)
    store.mark_distributed(pushed, result.descriptor.digest)
    return result


def local_tags(store: Store, repository: Reference) -> list[Reference]:
    """The store's tags of *repository* (for ``push --all-tags``)."""
    out = []
    for record in store.images():
        ref = record.reference
        if ref is not None and ref.name == repository.name and ref.tag:
            out.append(ref)
    return out

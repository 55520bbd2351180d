"""``login``, ``logout``, ``pull``, ``push``, ``copy``, ``manifest inspect``, ``tags``: flag parsing,
one ``registry`` library call each, and the rendering of transfer progress (tqdm or plain lines).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from builder.base import events
from builder.cli import Globals, flags
from registry.errors import InvalidReference, NotFound
from registry.model import Platform
from registry.reference import Reference

if TYPE_CHECKING:
    from registry.transfer import ClientOptions, Event

F = TypeVar("F", bound=Callable[..., Any])
_CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                      "application/vnd.docker.container.image.v1+json"})
TLS_HELP = ("Require HTTPS with a verified certificate (default true); "
            "--tls-verify=false also allows plain HTTP.")


def _tls_option(name: str = "--tls-verify", help: str = TLS_HELP) -> Callable[[F], F]:
    return flags.option(name, type=flags.BOOL, default=True, is_flag=False, flag_value=True,
                        show_default=False, metavar="BOOL", help=help)


class Renderer:
    """Turns transfer ``Event``s into output: Docker's per-layer status lines (``<id>: Pull
    complete``, ``Already exists``, ``Pushed``…) on *out* (stdout for ``pull``/``push``, as Docker;
    stderr by default), plus one tqdm bar per blob and a total on a terminal (stderr); nothing
    with ``quiet``. Called from worker threads."""

    def __init__(self, *, verb: str, quiet: bool = False, tty: bool | None = None,
                 out: TextIO | None = None) -> None:
        self.verb = verb  # "Pulling"/"Pushing"/"Copying"
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.out = out
        #: a pull's "Already exists" lines, until a blob is fetched: an image that is up to
        #: date shows none (Docker compares the manifest first); None once flushed for good
        self._held: list[str] | None = []
        self._lock = threading.Lock()
        self._bars: dict[str, Any] = {}
        self._total: Any = None
        self._sizes: dict[str, int] = {}
        self._done: dict[str, int] = {}

    def _line(self, text: str) -> None:
        out = self.out or sys.stderr
        if self.tty:
            from tqdm import tqdm

            tqdm.write(text, file=out)  # clears the bars first, then redraws them
        else:
            flags.echo(text, file=out)
            out.flush()

    def __call__(self, ev: Event) -> None:
        if self.quiet:
            return
        with self._lock:
            self._render(ev)

    def _render(self, ev: Event) -> None:
        short = ev.digest.short if ev.digest else ""
        if ev.kind == "retry":
            self._line(f"Retrying: {ev.detail}")
            return
        if ev.media_type in _CONFIGS:
            return  # as Docker shows it: layers only
        if ev.kind == "exists":
            line = f"{short}: {'Layer already exists' if self.verb == 'Pushing' else 'Already exists'}"
            if self.verb == "Pulling" and self._held is not None:
                self._held.append(line)  # shown only if the pull brings something new
            else:
                self._line(line)
            return
        if self._held and ev.kind in ("start", "mounted"):
            held, self._held = self._held, []
            for line in held:
                self._line(line)
        if ev.kind == "mounted":
            self._line(f"{short}: Mounted from {ev.detail}")
            return
        if ev.kind == "manifest":
            return
        if not self.tty:
            if ev.kind == "start":
                started = {"Pulling": "Pulling fs layer", "Pushing": "Preparing"}
                self._line(f"{short}: {started.get(self.verb, f'{self.verb} {_size(ev.size)}')}")
            elif ev.kind == "done":
                self._done_lines(short)
            return
        from tqdm import tqdm

        key = str(ev.digest)
        if ev.kind == "start":
            self._sizes[key] = ev.size
            self._done[key] = 0
            if self._total is None:
                self._total = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024,
                                   desc="total", position=0, leave=False, file=sys.stderr)
            self._total.total += ev.size
            self._total.refresh()
            self._bars[key] = tqdm(total=ev.size, unit="B", unit_scale=True, unit_divisor=1024,
                                   desc=short, position=len(self._bars) + 1, leave=False,
                                   file=sys.stderr)
        elif ev.kind in ("progress", "done") and key in self._bars:
            delta = ev.current - self._done[key]
            self._done[key] = ev.current
            self._bars[key].update(delta)
            if self._total is not None:
                self._total.update(delta)
            if ev.kind == "done":
                self._bars.pop(key).close()
                self._done_lines(short)

    def _done_lines(self, short: str) -> None:
        """A blob finished: Docker's last words for it (a pulled layer is stored as it came, so
        its download completes the pull)."""
        if self.verb == "Pushing":
            self._line(f"{short}: Pushed")
            return
        self._line(f"{short}: Download complete")
        if self.verb == "Pulling":
            self._line(f"{short}: Pull complete")

    def close(self, *, up_to_date: bool = False) -> None:
        """End the output; a pull's held "Already exists" lines are shown unless *up_to_date*."""
        with self._lock:
            held, self._held = self._held or [], None
            if not up_to_date and not self.quiet:
                for line in held:
                    self._line(line)
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()
            if self._total is not None:
                self._total.close()
                self._total = None


def _size(n: int) -> str:
    """Docker's units: ``454B``, ``1.2MB`` (powers of 1000)."""
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"


def _client_options(max_concurrent: int) -> ClientOptions:
    from registry.transfer import ClientOptions

    return ClientOptions(pool_size=max(max_concurrent * 2, 4))


# -- login / logout ----------------------------------------------------------------------------
def _server_domain(server: str | None) -> str:
    from registry.auth import server_domain
    try:
        return server_domain(server)
    except InvalidReference as e:
        raise flags.BadParameter(str(e), param_hint="SERVER") from None


@flags.command("login")
@flags.option("-u", "--username", help="Username.")
@flags.option("-p", "--password", help="Password (prefer --password-stdin).")
@flags.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_tls_option()
@flags.argument("server", required=False)
@flags.pass_obj
def login(obj: Globals, username: str | None, password: str | None, password_stdin: bool,
          tls_verify: bool, server: str | None) -> None:
    """Log in to a registry (Docker Hub by default), storing credentials as Docker does.

    For Amazon ECR: aws ecr get-login-password | pybuild login -u AWS --password-stdin
    <account>.dkr.ecr.<region>.amazonaws.com
    """
    from registry.auth import Credentials, DockerConfig, login_host
    from registry.client import RegistryClient

    domain = _server_domain(server)
    if password is not None and not password_stdin:
        flags.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", err=True)
    if password_stdin:
        if password:
            raise flags.UsageError("--password and --password-stdin are mutually exclusive")
        if not username:
            raise flags.UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = flags.prompt("Username")
    if password is None:
        password = flags.prompt("Password", hide_input=True)
    if not password:
        raise flags.UsageError("password is empty")
    creds = Credentials(username, password)
    with RegistryClient(login_host(domain), credentials=creds, tls_verify=tls_verify) as client:
        identity = client.verify_login()
    config = DockerConfig.load()
    where = config.store(domain, Credentials(username, identity_token=identity) if identity else creds)
    if where == str(config.path):
        flags.echo(f"WARNING! Your credentials are stored unencrypted in '{where}'. "
                   "Configure a credential helper (credsStore/credHelpers) to avoid this.", err=True)
    flags.echo("Login Succeeded")


@flags.command("logout")
@flags.argument("server", required=False)
def logout(server: str | None) -> None:
    """Remove stored credentials for a registry (Docker Hub by default)."""
    from registry.auth import DockerConfig

    domain = _server_domain(server)
    if DockerConfig.load().erase(domain):
        flags.echo(f"Removing login credentials for {domain}")
    else:
        flags.echo(f"Not logged in to {domain}")


# -- pull / push / copy ------------------------------------------------------------------------
@flags.command("pull")
@flags.option("--platform", help="os/arch[/variant] to pull from a multi-platform image.")
@flags.option("-a", "--all-platforms", is_flag=True, help="Pull every platform of an index.")
@flags.option("-q", "--quiet", is_flag=True, help="Print only the image reference.")
@flags.option("--max-concurrent-downloads", default=3, show_default=True, type=flags.IntRange(1, 64))
@_tls_option()
@flags.argument("name")
@flags.pass_obj
def pull(obj: Globals, platform: str | None, all_platforms: bool, quiet: bool,
         max_concurrent_downloads: int, tls_verify: bool, name: str) -> None:
    """Pull an image from a registry into the local store."""
    from registry.transfer import pull_result

    ref = Reference.parse(name)
    plat = platform_option(platform)
    if not quiet and Reference.parse(name, default_tag=False).tag is None and ref.digest is None:
        flags.echo("Using default tag: latest")
    if not quiet:
        flags.echo(f"{ref.tag or ref.digest}: Pulling from {ref.path}")
    r = Renderer(verb="Pulling", quiet=quiet, out=sys.stdout)
    try:
        _image, result = pull_result(
            obj.state.image_store(), ref, platform=plat, all_platforms=all_platforms,
            progress=r, tls_verify=tls_verify, max_concurrent=max_concurrent_downloads,
            client_options=_client_options(max_concurrent_downloads))
    except BaseException as e:
        r.close()
        from registry.transfer import NoMatchingManifest

        if isinstance(e, NoMatchingManifest):  # docker pull: the daemon's message alone
            flags.echo(str(e), err=True)
            sys.exit(1)
        raise
    r.close(up_to_date=not result.copied)
    events.emit(obj.state, "image", "pull", ref.familiar, {"name": ref.familiar})
    if quiet:
        flags.echo(str(ref))
        return
    flags.echo(f"Digest: {result.digest}")
    status = "Downloaded newer image for" if result.copied else "Image is up to date for"
    flags.echo(f"Status: {status} {ref.familiar}")
    flags.echo(str(ref))


def platform_option(text: str | None) -> Any:
    """``--platform os/arch[/variant]`` of pull, copy, rmi and inspect; None when not given."""
    if not text:
        return None
    try:
        return Platform.parse(text)
    except ValueError as e:
        raise flags.BadParameter(str(e), param_hint="--platform") from None


@flags.command("push")
@flags.option("-a", "--all-tags", is_flag=True, help="Push every local tag of the repository.")
@flags.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@flags.option("--max-concurrent-uploads", default=3, show_default=True, type=flags.IntRange(1, 64))
@_tls_option()
@flags.argument("name")
@flags.argument("destination", required=False)
@flags.pass_obj
def push(obj: Globals, all_tags: bool, quiet: bool, max_concurrent_uploads: int, tls_verify: bool,
         name: str, destination: str | None) -> None:
    """Push a local image to a registry (to DESTINATION if given, else to NAME itself)."""
    from registry.transfer import local_tags
    from registry.transfer import push as push_image

    store = obj.state.image_store()
    if all_tags:
        if destination:
            raise flags.UsageError("--all-tags takes no DESTINATION")
        ref = Reference.parse(name, default_tag=False)
        if ref.tag or ref.digest:
            raise flags.UsageError("tag can't be used with --all-tags/-a")
        targets = [(str(t), str(t)) for t in local_tags(store, ref)]
        if not targets:
            raise NotFound(f"not found: no local tags of {ref.familiar_name}")
    else:
        dest = destination or name
        targets = [(name, dest)]
    if not quiet:
        flags.echo(f"The push refers to repository [{Reference.parse(targets[0][1]).name}]")
    for source, dest in targets:
        r = Renderer(verb="Pushing", quiet=quiet, out=sys.stdout)
        try:
            result = push_image(store, source, dest, progress=r, tls_verify=tls_verify,
                                max_concurrent=max_concurrent_uploads,
                                client_options=_client_options(max_concurrent_uploads))
        finally:
            r.close()
        pushed = Reference.parse(dest).familiar
        events.emit(obj.state, "image", "push", pushed, {"name": pushed})
        if quiet:
            flags.echo(str(result.descriptor.digest))
        else:
            tag = Reference.parse(dest).tag or "latest"
            flags.echo(f"{tag}: digest: {result.descriptor.digest} size: {result.descriptor.size}")


@flags.command("copy")
@flags.option("--platform", help="os/arch[/variant] to copy from a multi-platform image.")
@flags.option("-a", "--all-platforms", "--all", is_flag=True, help="Copy an index with every platform.")
@flags.option("-q", "--quiet", is_flag=True, help="Print only the copied digest.")
@flags.option("--max-concurrent", default=3, show_default=True, type=flags.IntRange(1, 64),
              help="Blobs transferred at once.")
@_tls_option()
@_tls_option("--src-tls-verify", "Like --tls-verify, for the source only.")
@_tls_option("--dest-tls-verify", "Like --tls-verify, for the destination only.")
@flags.argument("source")
@flags.argument("destination")
@flags.pass_obj
def copy(obj: Globals, platform: str | None, all_platforms: bool, quiet: bool, max_concurrent: int,
         tls_verify: bool, src_tls_verify: bool, dest_tls_verify: bool,
         source: str, destination: str) -> None:
    """Copy an image between two of: a registry (docker://REF, or any REF naming a registry host),
    the local store (local:NAME, or a bare NAME without a registry host), an OCI layout
    (oci:DIR[:TAG]), an archive (oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG]).
    """
    from registry.transfer import copy as copy_image
    from registry.transfer import parse_end

    store = obj.state.image_store()
    options = _client_options(max_concurrent)
    src = parse_end(source, store=store, tls_verify=tls_verify and src_tls_verify,
                    client_options=options, role="source")
    dst = parse_end(destination, store=store, tls_verify=tls_verify and dest_tls_verify,
                    client_options=options, role="destination")
    r = Renderer(verb="Copying", quiet=quiet)
    try:
        result = copy_image(src, dst, platform=platform_option(platform), all_platforms=all_platforms,
                            max_concurrent=max_concurrent, progress=r)
    finally:
        r.close()
        for end in (src, dst):
            repo = getattr(end, "repo", None)
            if repo is not None:
                repo.client.close()
    if quiet:
        flags.echo(str(result.descriptor.digest))
    else:
        flags.echo(f"Copied {src.describe()} to {dst.describe()}: {result.copied} copied, "
                   f"{result.existing} existing, {result.mounted} mounted")
        flags.echo(f"Digest: {result.descriptor.digest}")


# -- manifest inspect / tags -------------------------------------------------------------------
@flags.group("manifest")
def manifest() -> None:
    """Inspect manifests in a registry."""


@manifest.command("inspect")
@flags.option("--raw", is_flag=True, help="Print the exact bytes the registry served.")
@_tls_option()
@flags.argument("name")
def manifest_inspect(raw: bool, tls_verify: bool, name: str) -> None:
    """Print the manifest or index of NAME as the registry serves it (JSON)."""
    from registry.transfer import remote_end

    end = remote_end(name, tls_verify=tls_verify)
    try:
        fetched = end.resolve()
    finally:
        end.repo.client.close()
    if raw:
        sys.stdout.buffer.write(fetched.raw)
        sys.stdout.buffer.flush()
        return
    flags.echo(json.dumps(_docker_order(json.loads(fetched.raw)), indent=3))


# the docker CLI prints a manifest through its Go structs: their field order, not the document's
_ORDER = ("schemaVersion", "mediaType", "config", "layers", "manifests", "size", "digest",
          "urls", "annotations", "platform", "architecture", "os", "os.version", "os.features",
          "variant", "features")


def _docker_order(value: Any) -> Any:
    if isinstance(value, list):
        return [_docker_order(v) for v in value]
    if not isinstance(value, dict):
        return value
    rank = {k: i for i, k in enumerate(_ORDER)}
    keys = sorted(value, key=lambda k: (rank.get(k, len(rank)), k))
    return {k: value[k] if k == "annotations" else _docker_order(value[k]) for k in keys}


@flags.command("tags")
@_tls_option()
@flags.argument("repository")
def tags(tls_verify: bool, repository: str) -> None:
    """List the tags of a repository in a registry."""
    from registry.transfer import remote_end

    end = remote_end(repository, tls_verify=tls_verify)
    try:
        for t in end.repo.tags():
            flags.echo(t)
    finally:
        end.repo.client.close()

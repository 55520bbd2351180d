"""``pybuild serve``: the Docker Engine API daemon (``builder.api``)."""

from __future__ import annotations

from typing import Any

from builder.cli import fail, flags


@flags.command()
@flags.option("-H", "--host", "hosts", multiple=True,
              help="unix:///path or tcp://host:port to listen on (repeatable; default "
                   "unix:///run/pybuild.sock).")
@flags.option("--tls", is_flag=True, help="Use TLS (implied by --tlsverify).")
@flags.option("--tlsverify", is_flag=True,
              help="Use TLS and require client certificates signed by --tlscacert.")
@flags.option("--tlscacert", type=flags.Path(dir_okay=False), default=None,
              help="CA certificate that client certificates must chain to.")
@flags.option("--tlscert", type=flags.Path(dir_okay=False), default=None,
              help="Server certificate.")
@flags.option("--tlskey", type=flags.Path(dir_okay=False), default=None, help="Server key.")
@flags.pass_obj
def serve(g: Any, hosts: tuple[str, ...], tls: bool, tlsverify: bool, tlscacert: str | None,
          tlscert: str | None, tlskey: str | None) -> None:
    """Serve the Docker Engine API, so docker clients drive pybuild (Ctrl-C to stop)."""
    from builder.api.server import ServeError, TLSOptions
    from builder.api.server import serve as run

    if tls and not tlsverify and not (tlscert and tlskey):
        fail("--tls needs --tlscert and --tlskey")
    opts = TLSOptions(verify=tlsverify, cacert=tlscacert, cert=tlscert, key=tlskey)

    def ready(where: list[str]) -> None:
        flags.echo(f"API listening on {', '.join(where)}", err=True)

    def warn(message: str) -> None:
        flags.echo(f"WARNING: {message}", err=True)

    try:
        run(g.state, list(hosts), tls=opts, ready=ready, warn=warn)
    except ServeError as e:
        fail(str(e))

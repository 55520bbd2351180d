"""Making and running containers: Dockerfile front end, build graph, execution core.

The public Python API is the names in ``__all__``, imported from their modules on first use
(``import builder`` itself loads nothing else): every call takes the ``StateRoot`` it works in
first, as the ``pybuild --root`` commands do. See "Python API" in the README.
"""

# (no ``from __future__`` import: it would come first, and be an import before the handler below)
import os
import sys as _sys


def _cancelled_at_start(signum: int, frame: object) -> None:
    """Ctrl-C before ``builder.cli.main`` can handle it: the end a later one has, no traceback."""
    os.write(2, b"cancelled\n")
    os._exit(130)


if (getattr(_sys, "argv", None) or [""])[0].rpartition("/")[2] == "pybuild":
    # the console script, whose first import this is: covered from here (not only once the
    # CLI's imports are done); builder.cli.main gives Ctrl-C back to KeyboardInterrupt
    import _signal  # built in and already loaded (``signal`` would import enum)

    _signal.signal(_signal.SIGINT, _cancelled_at_start)
del _sys

# not ``typing.TYPE_CHECKING``: importing typing would cost ``import builder`` ~5 ms (mypy
# treats this constant the same way)
TYPE_CHECKING = False

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    "StateRoot": "builder.base.state:StateRoot",
    # build
    "build": "builder.imagebuild.pipeline:run_build",
    "BuildRequest": "builder.imagebuild.pipeline:BuildRequest",
    "BuildOutcome": "builder.imagebuild.pipeline:BuildOutcome",
    "Output": "builder.imagebuild.pipeline:Output",
    # containers
    "RunOptions": "builder.runtime.containers.create:RunOptions",
    "Container": "builder.runtime.containers.record:Container",
    "ContainerConfig": "registry.config:ContainerConfig",
    "run": "builder.runtime.containers.service:run_foreground",
    "run_detached": "builder.runtime.containers.service:run_detached",
    "create": "builder.runtime.containers.service:create",
    "start": "builder.runtime.containers.service:start",
    "restart": "builder.runtime.containers.service:restart",
    "stop": "builder.runtime.containers.lifecycle:stop",
    "kill": "builder.runtime.containers.lifecycle:kill",
    "wait": "builder.runtime.containers.lifecycle:wait",
    "remove": "builder.runtime.containers.lifecycle:remove",
    "get_container": "builder.runtime.containers.lifecycle:get",
    "list_containers": "builder.runtime.containers.lifecycle:list_containers",
    "prune_containers": "builder.runtime.containers.lifecycle:prune",
    "read_logs": "builder.runtime.containers.logfile:read_logs",
    # networks
    "Network": "builder.network.model:Network",
    "Endpoint": "builder.network.model:Endpoint",
    "PortBinding": "builder.network.model:PortBinding",
    "create_network": "builder.network.core:create_network",
    "get_network": "builder.network.core:get_network",
    "list_networks": "builder.network.core:list_networks",
    "remove_network": "builder.network.core:remove_network",
    "prune_networks": "builder.network.core:prune_networks",
    # volumes
    "Volume": "builder.runtime.volume.store:Volume",
    "create_volume": "builder.runtime.volume.store:create",
    "get_volume": "builder.runtime.volume.store:get",
    "list_volumes": "builder.runtime.volume.store:list_volumes",
    "remove_volume": "builder.runtime.volume.store:remove",
    "prune_volumes": "builder.runtime.volume.store:prune",
    # errors
    "BuildError": "builder.base.errors:BuildError",
    "DockerfileSyntaxError": "builder.base.errors:DockerfileSyntaxError",
    "StepFailed": "builder.base.errors:StepFailed",
    "ContainerError": "builder.base.errors:ContainerError",
    "NetworkError": "builder.base.errors:NetworkError",
    "VolumeError": "builder.base.errors:VolumeError",
}

# the names of ``_EXPORTS`` (a test pins both)
__all__ = [
    "BuildError",
    "BuildOutcome",
    "BuildRequest",
    "Container",
    "ContainerConfig",
    "ContainerError",
    "DockerfileSyntaxError",
    "Endpoint",
    "Network",
    "NetworkError",
    "Output",
    "PortBinding",
    "RunOptions",
    "StateRoot",
    "StepFailed",
    "Volume",
    "VolumeError",
    "build",
    "create",
    "create_network",
    "create_volume",
    "get_container",
    "get_network",
    "get_volume",
    "kill",
    "list_containers",
    "list_networks",
    "list_volumes",
    "prune_containers",
    "prune_networks",
    "prune_volumes",
    "read_logs",
    "remove",
    "remove_network",
    "remove_volume",
    "restart",
    "run",
    "run_detached",
    "start",
    "stop",
    "wait",
]

if TYPE_CHECKING:  # the names, typed, for checkers; at run time __getattr__ imports them
    from builder.base.errors import (
        BuildError,
        ContainerError,
        DockerfileSyntaxError,
        NetworkError,
        StepFailed,
        VolumeError,
    )
    from builder.base.state import StateRoot
    from builder.imagebuild.pipeline import BuildOutcome, BuildRequest, Output
    from builder.imagebuild.pipeline import run_build as build
    from builder.network.core import (
        create_network,
        get_network,
        list_networks,
        prune_networks,
        remove_network,
    )
    from builder.network.model import Endpoint, Network, PortBinding
    from builder.runtime.containers.create import RunOptions
    from builder.runtime.containers.lifecycle import get as get_container
    from builder.runtime.containers.lifecycle import kill, list_containers, remove, stop, wait
    from builder.runtime.containers.lifecycle import prune as prune_containers
    from builder.runtime.containers.logfile import read_logs
    from builder.runtime.containers.record import Container
    from builder.runtime.containers.service import create, restart, run_detached, start
    from builder.runtime.containers.service import run_foreground as run
    from builder.runtime.volume.store import Volume, list_volumes
    from builder.runtime.volume.store import create as create_volume
    from builder.runtime.volume.store import get as get_volume
    from builder.runtime.volume.store import prune as prune_volumes
    from builder.runtime.volume.store import remove as remove_volume
    from registry.config import ContainerConfig


if not TYPE_CHECKING:  # mypy would take any name, submodules too, as Any
    from registry.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
    del lazy_exports

"""Fixtures of the ``pybuild serve`` tests: a daemon on a unix socket, and clients for it.

``serve``: a ``Daemon`` running ``pybuild --root R serve --host unix://SOCK`` over the
``busybox`` root (its store holds ``busybox:latest``), started for the test and stopped after it
(SIGTERM; the test fails if the daemon did not exit 0, left its socket, or printed a traceback).

    serve.sock              the socket path; ``serve.host`` is ``unix://SOCK``
    serve.env               environment for a docker client: DOCKER_HOST, a private DOCKER_CONFIG
    serve.docker(*args)     runs Debian's ``/usr/bin/docker`` (20.10) against the daemon
    serve.client            a docker-py ``DockerClient`` on the socket
    serve.api(method, path, body=None, headers=None) -> (status, headers, bytes)   raw HTTP
    serve.pyb               the ``Pybuild`` runner of the same root (``serve.pyb("images")``)

``serve_factory(pyb, *extra_args)`` starts another daemon over any ``Pybuild`` root.
``dockerd`` (session): the private Docker engine of ``tests/dockerd.py``, the judge.
``Daemon``, ``DOCKER`` (the client binary) and ``uhttp`` live in ``serve_client.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry_server import (  # noqa: E402,F401 - fixtures, registered by being imported here
    plain_registry,
    registry_tmp,
)
from serve_client import DOCKER, Daemon, uhttp  # noqa: E402,F401 - re-exported for the fixtures


@pytest.fixture
def serve_factory() -> Iterator[Callable[..., Daemon]]:
    made: list[Daemon] = []

    def make(pyb: Any, *extra: str) -> Daemon:
        d = Daemon(pyb, *extra)
        made.append(d)
        return d.start()

    yield make
    errors = []
    for d in made:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture
def serve(busybox: Any, serve_factory: Callable[..., Daemon]) -> Daemon:
    return serve_factory(busybox)

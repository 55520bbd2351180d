"""Errors by kind: every class of both error trees has an ``ErrorKind``; ``serve`` maps a kind to
an HTTP status and the CLI to an exit status, each in one table covering every kind; real
failures come out with Docker's status through the CLI and through ``pybuild serve``."""

from __future__ import annotations

import json
import pkgutil
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

import builder
import registry
from builder.api.errors import HTTP_STATUS, status_of
from builder.base import errors as berr
from builder.base.errors import EXIT_STATUS, BuildError, exit_status
from registry import errors as rerr
from registry.errors import RegistryError
from registry.kinds import ErrorKind

sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))

from serve_client import Daemon  # noqa: E402


def _all_subclasses(base: type) -> set[type]:
    out: set[type] = set()
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in out:
                out.add(sub)
                todo.append(sub)
    return out


def _import_everything() -> None:
    """Every module of both packages, so every error class defined anywhere is seen."""
    for pkg in (builder, registry):
        for m in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if ".larkglue" in m.name or m.name.endswith("__main__"):
                continue  # Lark on purpose / runs the CLI; neither defines an error class
            import_module(m.name)


def test_every_error_class_has_a_kind() -> None:
    _import_everything()
    classes = {BuildError, RegistryError} | _all_subclasses(BuildError) | _all_subclasses(RegistryError)
    ours = {c for c in classes if c.__module__.split(".")[0] in ("builder", "registry")}
    assert len(ours) >= 35
    for cls in ours:
        assert isinstance(cls.kind, ErrorKind), cls
    # the kinds a caller acts on, class by class
    want = {
        rerr.NotFound: ErrorKind.NOT_FOUND, rerr.BlobUnknown: ErrorKind.NOT_FOUND,
        rerr.InvalidReference: ErrorKind.INVALID, rerr.Unauthorized: ErrorKind.UNAUTHORIZED,
        rerr.Denied: ErrorKind.FORBIDDEN, rerr.TransportError: ErrorKind.UNAVAILABLE,
        rerr.TooManyRequests: ErrorKind.UNAVAILABLE, rerr.StoreError: ErrorKind.SYSTEM,
        berr.DockerfileSyntaxError: ErrorKind.INVALID, berr.PlanError: ErrorKind.INVALID,
        berr.StepFailed: ErrorKind.FAILED, berr.BuildCancelled: ErrorKind.CANCELLED,
        berr.SandboxError: ErrorKind.SYSTEM, berr.ContainerError: ErrorKind.SYSTEM,
        berr.TemplateParseError: ErrorKind.INVALID,
    }
    for cls, kind in want.items():
        assert cls.kind is kind, cls
    from builder.runtime.containers.record import NoSuchContainer, NotRunning

    assert NoSuchContainer.kind is ErrorKind.NOT_FOUND and NotRunning.kind is ErrorKind.CONFLICT


def test_a_raise_gives_its_own_kind_and_keeps_its_class() -> None:
    e = berr.NetworkError.conflict("network with name x already exists")
    assert type(e) is berr.NetworkError and e.kind is ErrorKind.CONFLICT
    assert berr.NetworkError.kind is ErrorKind.SYSTEM  # the class is untouched
    assert str(e) == "network with name x already exists"
    assert rerr.StoreError.not_found("x").kind is ErrorKind.NOT_FOUND


def test_the_tables_cover_every_kind() -> None:
    assert set(HTTP_STATUS) == set(ErrorKind) == set(EXIT_STATUS)
    assert HTTP_STATUS[ErrorKind.NOT_FOUND] == 404 and HTTP_STATUS[ErrorKind.CONFLICT] == 409
    assert HTTP_STATUS[ErrorKind.INVALID] == 400 and HTTP_STATUS[ErrorKind.SYSTEM] == 500
    # the CLI: 1 for a refusal, 125 when the engine refuses (Docker's run/create), 130 Ctrl-C,
    # a status the runtime reported passed on (126/127)
    assert exit_status(berr.PlanError("x")) == 1
    assert exit_status(berr.ContainerError.invalid("x")) == 125
    assert exit_status(berr.BuildCancelled("x")) == 130
    assert exit_status(berr.CommandNotFound("x")) == 127
    assert exit_status(berr.CommandNotExecutable("x")) == 126
    assert exit_status(rerr.NotFound("x")) == 1
    assert berr.VolumeError("x").exit_code == 125  # the property reads the same table


def test_library_failures_carry_their_kind() -> None:
    from builder.network import parse_publish
    from builder.runtime.containers.options import RestartPolicy

    with pytest.raises(berr.NetworkError) as e:
        parse_publish("1:2:3:4")
    assert e.value.kind is ErrorKind.INVALID and status_of(e.value) == 400
    with pytest.raises(berr.ContainerError) as c:
        RestartPolicy.parse("sometimes")
    assert c.value.kind is ErrorKind.INVALID and exit_status(c.value) == 125
    with pytest.raises(rerr.InvalidReference) as r:
        registry.Reference.parse("UPPER/case")
    assert status_of(r.value) == 400 and exit_status(r.value) == 1


def test_real_failures_through_the_cli(busybox: Any, tmp_path: Path) -> None:
    def code(*args: str) -> tuple[int, str]:
        r = busybox(*args, check=False)
        return r.returncode, r.stderr.strip()

    assert code("rm", "nosuch") == (1, "Error: No such container: nosuch")  # not found, exit 1
    rc, err = code("run", "--pull", "never", "nosuch:latest", "true")  # not found by the engine
    assert rc == 125 and "No such image: nosuch:latest" in err
    busybox("create", "--name", "taken", "busybox", "true")
    rc, err = code("create", "--name", "taken", "busybox", "true")  # conflict by the engine
    assert rc == 125 and 'The container name "/taken" is already in use' in err
    rc, err = code("exec", "taken", "true")  # not running: a conflict, exit 1 as Docker
    assert rc == 1 and "is not running" in err
    busybox("rm", "taken")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nNOSUCH x\n")
    rc, err = code("build", str(tmp_path))  # invalid: a Dockerfile error
    assert rc == 1 and "Dockerfile:2" in err
    rc, err = code("pull", "UPPER/case")  # invalid reference, from the registry tree
    assert rc == 1 and err.startswith("Error:")


def test_real_failures_through_serve(busybox: Any) -> None:
    d = Daemon(busybox).start()
    try:
        status, _h, body = d.api("GET", "/containers/nosuch/json")
        assert status == 404 and "No such container: nosuch" in json.loads(body)["message"]
        status, _h, body = d.api("POST", "/containers/create?name=dup", {"Image": "busybox", "Cmd": ["true"]})
        assert status == 201, body
        status, _h, body = d.api("POST", "/containers/create?name=dup", {"Image": "busybox", "Cmd": ["true"]})
        assert status == 409 and "already in use" in json.loads(body)["message"]
        status, _h, body = d.api("POST", "/networks/create",
                                 {"Name": "n1", "IPAM": {"Config": [{"Subnet": "nonsense"}]}})
        assert status == 400, body
        status, _h, body = d.api("DELETE", "/volumes/nosuch")
        assert status == 404 and "no such volume" in json.loads(body)["message"]
        status, _h, body = d.api("POST", "/containers/dup/kill")
        assert status == 409 and "is not running" in json.loads(body)["message"]
        status, _h, body = d.api("DELETE", "/containers/dup")
        assert status == 204, body
    finally:
        d.stop()

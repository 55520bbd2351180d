"""``ContainerConfig``: typed, frozen, and a byte-exact round trip of any ``config`` object."""

from __future__ import annotations

import json

import pytest

from registry.config import SCHEMA, ContainerConfig
from registry.model import ImageConfig, canonical_json
from registry.values import FrozenValueError, value_fields

DOCKER = {
    "Hostname": "", "Domainname": "", "User": "app", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Tty": False,
    "OpenStdin": False, "StdinOnce": False, "Env": ["PATH=/usr/bin", "A=b=c", "BARE"],
    "Cmd": ["nginx", "-g", "daemon off;"], "Healthcheck": {"Test": ["CMD-SHELL", "true"],
                                                         "Interval": 30000000000, "Retries": 3},
    "ArgsEscaped": True, "Image": "sha256:" + "a" * 64, "Volumes": {"/data": {}},
    "WorkingDir": "/srv", "Entrypoint": None, "OnBuild": None, "Labels": {"k": "v"},
    "StopSignal": "SIGQUIT", "StopTimeout": 5, "Shell": ["/bin/bash", "-c"],
}


def test_every_docker_key_is_typed() -> None:
    c = ContainerConfig.from_json(DOCKER)
    assert c.extra == {}
    assert c.user == "app" and c.env == ("PATH=/usr/bin", "A=b=c", "BARE")
    assert c.cmd == ("nginx", "-g", "daemon off;") and c.entrypoint is None
    assert c.exposed_ports == ("80/tcp", "53/udp") and c.volumes == ("/data",)
    assert c.labels == {"k": "v"} and c.healthcheck == DOCKER["Healthcheck"]
    assert c.stop_signal == "SIGQUIT" and c.stop_timeout == 5 and c.args_escaped is True
    assert c.env_map() == {"PATH": "/usr/bin", "A": "b=c", "BARE": ""}
    names = set(value_fields(ContainerConfig))
    assert names == {attr for attr, _ in SCHEMA.values()} | {"extra", "keys"}


@pytest.mark.parametrize("data", [
    DOCKER,
    {},
    {"Cmd": None, "Entrypoint": None},  # null kept as null, not dropped
    {"Env": "not-a-list", "Labels": {"n": 1}, "ExposedPorts": {"80/tcp": {"x": 1}}},  # ill-typed
    {"X-Unknown": {"deep": [1, {"a": None}]}, "User": "", "Cmd": ["a"]},
    {"Volumes": {}, "Labels": {}, "Env": []},
])
def test_round_trip_is_byte_exact(data: dict[str, object]) -> None:
    c = ContainerConfig.from_json(data)
    assert c.to_json() == data
    assert json.dumps(c.to_json()) == json.dumps(data)  # same keys in the same order
    assert canonical_json({"config": c.to_json()}) == canonical_json({"config": data})


def test_ill_typed_and_unknown_keys_stay_raw() -> None:
    c = ContainerConfig.from_json({"Env": "x", "Foo": [1]})
    assert c.env is None and c.extra == {"Env": "x", "Foo": [1]}
    assert c.get("Env") == "x" and c.get("Foo") == [1] and c.get("User") is None


def test_frozen_and_changes_make_a_new_value() -> None:
    c = ContainerConfig.from_json({"Cmd": ["a"], "Env": ["A=1"], "Z": 1})
    with pytest.raises(FrozenValueError):
        c.cmd = ("b",)  # type: ignore[misc]
    d = c.with_(cmd=None, env=[*(c.env or ()), "B=2"], exposed_ports=["80/tcp"], user="u")
    assert c.to_json() == {"Cmd": ["a"], "Env": ["A=1"], "Z": 1}
    assert d.to_json() == {"Env": ["A=1", "B=2"], "Z": 1, "ExposedPorts": {"80/tcp": {}}, "User": "u"}
    # a typed value replaces an ill-typed raw one
    assert ContainerConfig.from_json({"Env": "x"}).with_(env=["A=1"]).to_json() == {"Env": ["A=1"]}
    with pytest.raises(TypeError, match="no field 'nope'"):
        c.with_(nope=1)
    # the mapping a caller gave is copied: changing it later changes nothing
    labels = {"a": "1"}
    e = c.with_(labels=labels)
    labels["b"] = "2"
    assert e.labels == {"a": "1"}


def test_an_image_config_gives_its_config_typed_and_unchanged() -> None:
    raw = canonical_json({"architecture": "amd64", "os": "linux", "config": DOCKER,
                          "rootfs": {"type": "layers", "diff_ids": []}})
    ic = ImageConfig.parse(raw)
    assert ic.container_config.to_json() == ic.config
    rebuilt = ImageConfig.build({**json.loads(raw), "config": ic.container_config.to_json()})
    assert rebuilt.raw == raw and rebuilt.digest == ic.digest


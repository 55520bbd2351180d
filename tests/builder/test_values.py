"""``builder.base.values``: frozen values made without ``dataclasses`` (the container record's
``HostConfig`` and its parts, read by ``ps``) keep a frozen dataclass's behaviour; ``replace``
checks a copy again; ``HostConfig.other`` is typed JSON, kept byte for byte in the record file."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from dataclasses import field as dc_field

import pytest

from builder.base.errors import ContainerError
from builder.base.values import FrozenValueError, field, frozen, json_object, replace, value_fields
from builder.runtime.containers.hostconfig import HostConfig, Mount, Resources
from builder.runtime.containers.options import RestartPolicy


@frozen
class Point:
    """A value with a check, a default, a factory and a field left out of ``==``."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    note: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError(f"x {self.x} < 0")


@frozen
class Point3(Point):
    z: int = 0


def test_a_value_is_made_by_keyword_or_position_and_checked() -> None:
    assert Point(1, 2) == Point(x=1, y=2) == Point(1, y=2, tags=())
    assert Point(1).y == 0 and Point(1).tags == ()
    assert value_fields(Point) == ("x", "y", "tags", "note")
    with pytest.raises(ValueError, match="x -1 < 0"):
        Point(-1)
    with pytest.raises(TypeError, match="missing required argument: 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'w'"):
        Point(1, w=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5"):
        Point(1, 2, (), "", 5)  # type: ignore[call-arg]


def test_a_value_is_frozen_compared_hashed_shown_and_pickled() -> None:
    p = Point(1, 2, ("a",), note="kept apart")
    with pytest.raises(FrozenValueError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.y
    assert p == Point(1, 2, ("a",), note="other")  # note: compare=False
    as_tuple: object = (1, 2, ("a",), "kept apart")
    assert p != Point(1, 3, ("a",)) and p != as_tuple
    assert hash(p) == hash(Point(1, 2, ("a",))) and len({p, Point(1, 2, ("a",))}) == 1
    assert repr(p) == "Point(x=1, y=2, tags=('a',))"
    assert pickle.loads(pickle.dumps(p)) == p
    assert Point(1).tags is not Point(2).tags or Point(1).tags == ()  # a factory per instance
    # a value's subclass adds its fields after its base's
    assert value_fields(Point3) == ("x", "y", "tags", "note", "z") and Point3(1, z=4).z == 4
    assert Point3(1) != Point(1)  # another class is never equal


def test_replace_copies_checked_again_and_hands_dataclasses_on() -> None:
    p = Point(1, 2, note="n")
    q = replace(p, y=5)
    assert (q.x, q.y, q.note) == (1, 5, "n") and p.y == 2
    with pytest.raises(ValueError, match="x -2 < 0"):
        replace(p, x=-2)
    with pytest.raises(TypeError, match="no field 'w'"):
        replace(p, w=1)

    @dataclass(frozen=True)
    class D:
        a: int
        b: list[int] = dc_field(default_factory=list)

    assert replace(D(1), a=2) == D(2)


def test_host_config_values_keep_their_checks_through_replace() -> None:
    hc = HostConfig.from_json({"NetworkMode": "none", "Memory": 64 << 20})
    with pytest.raises(ContainerError, match="Conflicting options: --restart and --rm"):
        replace(hc, auto_remove=True, restart_policy=RestartPolicy("always"))
    with pytest.raises(ContainerError, match="Minimum memory limit allowed is 6MB"):
        replace(hc, resources=replace(hc.resources, memory=1024))
    with pytest.raises(ContainerError, match="mount path must be absolute"):
        Mount("volume", "rel")
    assert replace(hc, resources=Resources(memory=128 << 20)).resources.memory == 128 << 20
    with pytest.raises(TypeError):
        hash(hc)  # a Mapping view: unhashable, as it was


def test_other_fields_are_typed_json_and_written_back_as_read() -> None:
    # dockerd's fields pybuild does not act on: kept, nested as given, in the record file
    record = {"NetworkMode": "none", "BlkioWeight": 300, "OomScoreAdj": -5,
              "KernelMemoryTCP": None, "DeviceRequests": [{"Driver": "x", "Count": -1, "Options": {"a": "b"}}],
              "MaskedPaths": ["/proc/kcore"], "CpuPercent": 1.5}
    hc = HostConfig.from_json(record)
    assert dict(hc.other) == {k: v for k, v in record.items() if k != "NetworkMode"}
    again = json.dumps(HostConfig.from_json(json.loads(json.dumps(hc.to_json()))).to_json(), sort_keys=True)
    assert again == json.dumps(hc.to_json(), sort_keys=True)
    assert hc.to_json()["DeviceRequests"] == record["DeviceRequests"]
    with pytest.raises(ValueError, match=r"Odd\.inner\[1\]: set is not a JSON value"):
        json_object({"Odd": {"inner": [1, {2}]}})
    assert json_object({"T": (1, "a")}) == {"T": [1, "a"]}

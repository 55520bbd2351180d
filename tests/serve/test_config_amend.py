# ruff: noqa: F811 - the parameters named judge are the imported fixture
"""Issue 21: values, converted at the JSON edge. What ``POST /containers/create`` says of
``Config`` that no ``run`` flag does is one typed ``ConfigAmendments`` (made by
``builder.api.createbody.amendments``, applied by ``create.make_container``), recorded as dockerd records
it (judged against the private ``dockerd``); and ``import``/``commit --change`` lines make their
config in ``builder.imagebuild.graph`` (``config_from_changes``), beside ``apply_config``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_api_gaps import Judge, judge  # noqa: F401 - the fixture, registered by import

from builder.api.createbody import amendments
from builder.api.errors import ApiError
from builder.base.errors import ContainerError, InvalidChange
from builder.imagebuild.graph import config_from_changes
from builder.runtime.containers.create import ConfigAmendments, Healthcheck
from registry.kinds import ErrorKind

#: docker-py's ``Healthcheck`` key order (Retries before StartPeriod), not dockerd's
BODY: dict[str, Any] = {
    "Image": "busybox:latest", "Cmd": ["true"], "Env": ["A=1", "BARE"],
    "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "OpenStdin": True, "StdinOnce": True,
    "AttachStdin": True, "AttachStdout": True, "AttachStderr": False, "MacAddress": "02:42:ac:11:00:99",
    "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000, "Timeout": 0,
                    "Retries": 2, "StartPeriod": 1_000_000_000},
    "Labels": {"pbtest.gaps": "1"}, "HostConfig": {"NetworkMode": "none"},
}
KEYS = ("ExposedPorts", "Env", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr",
        "MacAddress", "Healthcheck")


def test_the_body_becomes_one_typed_value() -> None:
    a = amendments({**BODY, "ExposedPorts": {"80": {}, "53/udp": {}}})
    assert a == ConfigAmendments(
        exposed_ports=("80/tcp", "53/udp"), env=("A=1", "BARE"), stdin_once=True, attach_stdin=True,
        attach_stdout=True, attach_stderr=False, mac_address="02:42:ac:11:00:99",
        healthcheck=Healthcheck(("CMD-SHELL", "true"), interval=2_000_000_000, start_period=1_000_000_000,
                                retries=2))
    assert a.healthcheck is not None and list(a.healthcheck.record()) == ["Test", "Interval", "StartPeriod", "Retries"]
    # nothing said: nothing amended but the flags dockerd always records; NONE and [] are no test
    assert amendments({"Image": "busybox"}) == ConfigAmendments()
    assert amendments({"Healthcheck": {"Test": ["NONE"]}}).healthcheck is None
    assert amendments({"Healthcheck": {"Test": [], "Interval": 5_000_000}}).healthcheck is None


@pytest.mark.parametrize(("body", "message"), [
    ({"ExposedPorts": ["80/tcp"]}, "invalid ExposedPorts: an object is expected"),
    ({"Env": [1]}, "invalid Env: a list of strings is expected"),
    ({"StdinOnce": "yes"}, "invalid StdinOnce: a boolean is expected"),
    ({"AttachStderr": 1}, "invalid AttachStderr: a boolean is expected"),
    ({"MacAddress": 42}, "invalid MacAddress: a string is expected"),
    ({"Healthcheck": "true"}, "invalid Healthcheck: an object is expected"),
    ({"Healthcheck": {"Test": "CMD true"}}, "invalid Healthcheck.Test: a list of strings is expected"),
    ({"Healthcheck": {"Test": [["CMD"]]}}, "invalid Healthcheck.Test: a list of strings is expected"),
    ({"Healthcheck": {"Test": ["CMD", "true"], "Interval": "5s"}},
     "invalid Healthcheck.Interval: an integer is expected"),
    ({"Healthcheck": {"Test": ["CMD", "true"], "Retries": True}},
     "invalid Healthcheck.Retries: an integer is expected"),
])
def test_a_value_of_the_wrong_type_is_a_400_naming_its_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as info:
        amendments(body)
    assert (info.value.status, info.value.message) == (400, message)


def test_the_record_is_dockerds(serve: Any, judge: Judge) -> None:
    """Created through the raw API on both engines: the same ``Config`` for what the amendments
    say (a zero ``Timeout`` left out); a bad type is a 400 and writes nothing."""
    seen = []
    for api in (serve.api, judge.api):
        code, _h, data = api("POST", "/v1.41/containers/create", BODY)
        assert code == 201, data
        cid = json.loads(data)["Id"]
        code, _h, data = api("GET", f"/v1.41/containers/{cid}/json")
        assert code == 200, data
        config = json.loads(data)["Config"]
        seen.append({k: config.get(k) for k in KEYS})
        api("DELETE", f"/v1.41/containers/{cid}?force=1")
    assert seen[0] == seen[1]
    assert seen[0]["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 2_000_000_000,
                                      "StartPeriod": 1_000_000_000, "Retries": 2}
    assert seen[0]["Env"][:2] == ["A=1", "BARE"] and seen[0]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    before = serve.pyb("ps", "-aq").stdout
    code, _h, data = serve.api("POST", "/v1.41/containers/create",
                               {**BODY, "Healthcheck": {"Test": ["CMD", "true"], "Timeout": "1s"}})
    assert (code, json.loads(data)) == (400, {"message": "invalid Healthcheck.Timeout: an integer is expected"})
    assert serve.pyb("ps", "-aq").stdout == before


#: dockerd's checks of a healthcheck (``verifyContainerSettings``), made by the value itself
OUT_OF_RANGE = [
    ({"Interval": 500}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Interval": -5}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Timeout": 999_999}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"StartPeriod": 5}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
]


def test_a_healthcheck_out_of_range_is_refused_as_dockerd_does(serve: Any, judge: Judge) -> None:
    with pytest.raises(ContainerError) as info:
        Healthcheck(("CMD", "true"), timeout=1)
    assert info.value.kind is ErrorKind.INVALID
    assert Healthcheck(("CMD", "true"), interval=1_000_000, start_interval=5).interval == 1_000_000
    for given, message in OUT_OF_RANGE:
        for hc in ({"Test": ["CMD", "true"], **given}, {"Test": ["NONE"], **given}):
            body = {"Image": "busybox:latest", "Cmd": ["true"], "Healthcheck": hc, "Labels": {"pbtest.gaps": "1"}}
            answers = [(code, json.loads(data)["message"]) for code, _h, data in
                       (serve.api("POST", "/v1.41/containers/create", body),
                        judge.api("POST", "/v1.41/containers/create", body))]
            assert answers == [(400, message)] * 2, (hc, answers)


def test_config_changes_live_beside_the_config_code() -> None:
    import builder.runtime.images as runtime_images

    assert not hasattr(runtime_images, "config_from_changes")  # no alias: the README never named it
    base = {"Env": ["PATH=/bin"], "Cmd": ["sh"]}
    config = config_from_changes(["ENV HOME=/root", "WORKDIR $HOME/app", 'CMD ["run"]'], base=base)
    assert config == {"Env": ["PATH=/bin", "HOME=/root"], "Cmd": ["run"], "WorkingDir": "/root/app"}
    assert base == {"Env": ["PATH=/bin"], "Cmd": ["sh"]}  # the base is not changed
    assert config_from_changes([], base=base) == base
    with pytest.raises(InvalidChange) as info:
        config_from_changes(["EXPOSE 80", "STOPSIGNAL SIGBOGUS"])
    assert str(info.value) == "invalid --change 'STOPSIGNAL SIGBOGUS': invalid signal: SIGBOGUS"
    assert info.value.kind is ErrorKind.INVALID
    with pytest.raises(InvalidChange, match=r"^invalid --change 'RUN true': RUN is not a valid change command$"):
        config_from_changes(["RUN true"])

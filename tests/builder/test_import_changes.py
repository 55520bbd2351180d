"""``pybuild import --change``: the lines go through the Dockerfile front end and the build
planner's config logic (``builder.imagebuild.graph.apply_config``), as ``docker import`` applies them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.base.errors import PlanError
from builder.imagebuild import dockerfile as df
from builder.imagebuild.graph import apply_config

Pybuild = Any  # the runner from tests/conftest.py


def _config(pybuild: Pybuild, busybox_tar: Path, *changes: str) -> dict[str, Any]:
    args = [a for c in changes for a in ("--change", c)]
    pybuild("import", str(busybox_tar), "changed:1", *args)
    image = pybuild.store().resolve("changed:1")
    assert [h.get("created_by") for h in image.config.history] == [None]  # as Docker: one entry
    return image.config.config  # type: ignore[no-any-return]


def test_every_change_instruction(pybuild: Pybuild, busybox_tar: Path) -> None:
    c = _config(pybuild, busybox_tar,
                "CMD echo $A", 'ENTRYPOINT ["/bin/sh", "-c"]', 'ENV A=1 B="two words" C=x\\ y',
                "ENV LEGACY some value", "ENV A=3", 'LABEL a=b "c d"=e', "EXPOSE 80 53/udp 8000-8002",
                "USER app:staff", 'VOLUME ["/data"]', "VOLUME /logs /cache", "WORKDIR /srv",
                "WORKDIR app", "STOPSIGNAL SIGINT", "expose 9000",
                "HEALTHCHECK --interval=5s --retries=2 CMD wget -q localhost",
                "ONBUILD RUN echo triggered", "ONBUILD COPY . /app")
    assert c["Cmd"] == ["/bin/sh", "-c", "echo $A"]  # CMD set first: ENTRYPOINT keeps it
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    # a redefined name keeps its place, as docker import --change gives (checked on dockerd 20.10)
    assert c["Env"] == ["A=3", "B=two words", "C=x y", "LEGACY=some value"]
    assert c["Labels"] == {"a": "b", "c d": "e"}
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp",
                                      "9000/tcp"}
    assert c["User"] == "app:staff"
    assert c["Volumes"] == {"/data": {}, "/logs": {}, "/cache": {}}
    assert c["WorkingDir"] == "/srv/app"
    assert c["StopSignal"] == "SIGINT"
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"],
                                "Interval": 5_000_000_000, "Retries": 2}
    assert c["OnBuild"] == ["RUN echo triggered", "COPY . /app"]
    assert "Shell" not in c and "PATH" not in str(c.get("Env"))  # import adds no default PATH


def test_env_values_expand_in_later_changes(pybuild: Pybuild, busybox_tar: Path) -> None:
    c = _config(pybuild, busybox_tar, "ENV APP=/opt/app PORT=8080", "WORKDIR $APP/bin",
                "ENV PATH=$APP/bin:/bin HOME=${APP}", "EXPOSE ${PORT}/udp", "LABEL where=$APP",
                "USER ${NOBODY:-nobody}", "VOLUME $APP/data", "STOPSIGNAL ${SIG:-SIGTERM}",
                "CMD echo $APP")
    assert c["Env"] == ["APP=/opt/app", "PORT=8080", "PATH=/opt/app/bin:/bin", "HOME=/opt/app"]
    assert c["WorkingDir"] == "/opt/app/bin"
    assert c["ExposedPorts"] == {"8080/udp": {}}
    assert c["Labels"] == {"where": "/opt/app"}
    assert c["User"] == "nobody"
    assert c["Volumes"] == {"/opt/app/data": {}}
    assert c["StopSignal"] == "SIGTERM"
    assert c["Cmd"] == ["/bin/sh", "-c", "echo $APP"]  # CMD is the shell's to expand, as Docker


def test_entrypoint_without_cmd_clears_the_base_cmd() -> None:
    ins = df.load("FROM scratch\nENTRYPOINT top\n").stages[0].instructions
    config, created_by = apply_config({"Cmd": ["sh"], "Env": ["X=1"]}, ins)
    assert config == {"Entrypoint": ["/bin/sh", "-c", "top"], "Env": ["X=1"]}
    assert created_by == ['ENTRYPOINT ["/bin/sh" "-c" "top"]']
    # *env* is seen by the words but does not go into the config
    ins = df.load("FROM scratch\nWORKDIR $ROOT/x\n").stages[0].instructions
    assert apply_config({}, ins, {"ROOT": "/r"})[0] == {"WorkingDir": "/r/x"}
    run = df.load("FROM scratch\nRUN true\n").stages[0].instructions
    with pytest.raises(PlanError, match="RUN is not a valid change command"):
        apply_config({}, run)


@pytest.mark.parametrize("change, why", [
    ("RUN true", "RUN is not a valid change command"),
    ("COPY a b", "COPY is not a valid change command"),
    ("ADD a b", "ADD is not a valid change command"),
    ("ARG X=1", "ARG is not a valid change command"),
    ("SHELL [\"/bin/bash\", \"-c\"]", "SHELL is not a valid change command"),
    ("FROM busybox", "FROM is not a valid change command"),
    ("NOPE x", "unknown instruction: NOPE"),
    ("", "no instruction"),
    ("USER", "USER requires"),
    ("HEALTHCHECK --interval=soon CMD true", "interval"),
    ("ENV A=${B", "missing '}'"),
    ("EXPOSE 80-70", "invalid containerPort"),
])
def test_a_bad_change_is_one_line_and_changes_nothing(
        pybuild: Pybuild, busybox_tar: Path, store_listing: Callable[[Path], list[tuple[str, int]]],
        change: str, why: str) -> None:
    pybuild("import", str(busybox_tar), "before:1")
    before = store_listing(pybuild.root)
    r = pybuild("import", str(busybox_tar), "after:1", "-c", "ENV OK=1", "-c", change, check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"Error: invalid --change {change!r}: "), lines[0]
    assert why.lower() in lines[0].lower(), lines[0]
    assert store_listing(pybuild.root) == before


@pytest.mark.parametrize("change, why", [
    ("EXPOSE 99999", "invalid port 99999/tcp"),
    ("EXPOSE 80/foo", "invalid port 80/foo: protocol must be tcp, udp or sctp"),
    ("STOPSIGNAL SIGFOO", "invalid signal: SIGFOO"),
    ("STOPSIGNAL 99", "invalid signal: 99"),
])
def test_what_docker_import_refuses_beyond_a_build(pybuild: Pybuild, busybox_tar: Path,
                                                   change: str, why: str) -> None:
    r = pybuild("import", str(busybox_tar), "x:1", "-c", "ENV SIG=SIGKILL", "-c", change,
                "-c", "STOPSIGNAL $SIG", check=False)
    assert r.returncode != 0 and r.stderr == f"Error: invalid --change {change!r}: {why}\n", r.stderr
    assert pybuild("images", "-q").stdout == ""
    # the signal names Docker takes, expanded from ENV too
    pybuild("import", str(busybox_tar), "ok:1", "-c", "ENV SIG=rtmin+3", "-c", "STOPSIGNAL $SIG")
    assert pybuild.store().resolve("ok:1").config.config["StopSignal"] == "rtmin+3"

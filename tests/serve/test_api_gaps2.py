# ruff: noqa: F811 - the parameters named judge are the imported fixture
"""Issue 23, the rest: the Engine API judged against the private ``dockerd`` as in
``test_api_gaps.py`` (its ``judge`` fixture): each test asks both daemons the same thing
through docker-py and compares.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from test_api_gaps import Judge, both, judge  # noqa: F401 - the fixture, registered by import


def _ctx(dockerfile: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        t.addfile(info, io.BytesIO(dockerfile.encode()))
    return buf.getvalue()


# -- item 5: a RUN's stderr in red; extrahosts at RUN ---------------------------------------------

RED = re.compile(r"\x1b\[91m(.*?)\x1b\[0m", re.S)


def test_build_stream_wraps_run_stderr_in_red(serve: Any, judge: Judge) -> None:
    # the output's words are not in the command's text (which both streams show)
    df = 'FROM busybox:latest\nRUN echo to""-out; echo to""-err >&2; echo more""-out\n'
    rows = []
    for api in (serve.api, judge.api):
        status, _h, body = api("POST", "/v1.41/build?rm=1&nocache=1&networkmode=none", _ctx(df))
        assert status == 200, body
        text = "".join(json.loads(x).get("stream", "") for x in body.splitlines() if x.strip())
        red = [ln.strip() for chunk in RED.findall(text) for ln in chunk.splitlines() if ln.strip()]
        plain = RED.sub("", text)
        rows.append((red, "to-out" in plain, "more-out" in plain, "to-err" in plain))
    assert rows[0] == rows[1] == (["to-err"], True, True, False)


def test_build_extrahosts_are_in_the_run_steps_hosts(serve: Any, judge: Judge,
                                                     tmp_path: Path) -> None:
    rows = []
    for name, client in both(serve, judge):
        ctx = tmp_path / name
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            "FROM busybox:latest\nRUN grep -E 'gapshost|other' /etc/hosts > /h\n")
        image, _logs = client.images.build(
            path=str(ctx), rm=True, nocache=True, network_mode="none",
            extra_hosts={"gapshost": "10.9.8.7", "other.example": "192.0.2.1"})
        rows.append(client.containers.run(image.id, ["cat", "/h"], remove=True,
                                          network_mode="none"))
        client.images.remove(image.id, force=True)
    assert rows[0] == rows[1]
    assert b"10.9.8.7\tgapshost\n" in rows[0] and b"192.0.2.1\tother.example\n" in rows[0]
    # a malformed entry: 200, refused in the stream at the first RUN, in dockerd's words
    for api in (serve.api, judge.api):
        status, _h, body = api("POST", "/v1.41/build?rm=1&extrahosts=nocolon",
                               _ctx("FROM busybox:latest\nRUN true\n"))
        last = [json.loads(x) for x in body.splitlines() if x.strip()][-1]
        rows.append((status, last.get("errorDetail", {}).get("message")))
    assert rows[2] == rows[3] == (200, 'bad format for add-host: "nocolon"')

"""``/info``, ``/events`` (from the daemon and from CLI processes alike), ``/system/df``."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any


def test_info_from_docker_cli_and_docker_py(serve: Any) -> None:
    serve.pyb("tag", "busybox", "second:1")
    info = json.loads(serve.docker("info", "--format", "{{json .}}").stdout)
    assert info["DockerRootDir"] == str(serve.pyb.root)
    assert info["Images"] == 1  # one image, two tags: as dockerd counts
    assert info["OSType"] == "linux" and info["NCPU"] >= 1 and info["MemTotal"] > 0
    assert info["Containers"] == 0
    py = serve.client.info()
    assert py["ID"] == info["ID"] and py["ServerVersion"] == info["ServerVersion"]


def test_events_since_until_filters_from_cli_and_daemon(serve: Any) -> None:
    t0 = time.time()
    serve.pyb("tag", "busybox", "viacli:1")  # a CLI process
    serve.docker("tag", "busybox", "viadaemon:1")  # the daemon
    serve.docker("rmi", "viacli:1")
    serve.pyb("rmi", "viadaemon:1")
    t1 = time.time()
    fmt = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}"
    out = serve.docker("events", "--since", f"{t0:.9f}", "--until", f"{t1:.9f}",
                       "--format", fmt).stdout.splitlines()
    assert out == ["image tag viacli:1", "image tag viadaemon:1", "image untag viacli:1",
                   "image untag viadaemon:1"]
    out = serve.docker("events", "--since", f"{t0:.9f}", "--until", f"{t1:.9f}", "--filter",
                       "event=untag", "--format", fmt).stdout.splitlines()
    assert out == ["image untag viacli:1", "image untag viadaemon:1"]
    out = serve.docker("events", "--since", f"{t0:.9f}", "--until", f"{t1:.9f}", "--filter",
                       "type=container", "--format", fmt).stdout
    assert out == ""
    # nothing before since
    later = serve.docker("events", "--since", f"{t1:.9f}", "--until", f"{time.time():.9f}",
                         "--format", fmt).stdout
    assert later == ""


def test_events_stream_live_to_docker_py(serve: Any) -> None:
    client = serve.client
    # from `since` on, then live: no race between opening the stream and the first action
    stream = client.events(decode=True, since=time.time(),
                           filters={"type": "image", "event": "tag"})
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        for ev in stream:
            got.append(ev)
            if len(got) == 2:
                break
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    serve.pyb("tag", "busybox", "live:1")
    serve.pyb("rmi", "live:1")  # filtered out
    client.images.get("busybox").tag("live", "2")
    assert done.wait(30), got
    stream.close()
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in got] == [
        ("tag", "live:1"), ("tag", "live:2")]
    assert all(e["Actor"]["ID"] == serve.pyb.image_id and e["timeNano"] > 0 for e in got)
    assert serve.api("GET", "/_ping")[2] == b"OK"  # the dropped stream left the daemon serving


def test_bad_event_filters_and_system_df(serve: Any) -> None:
    status, _h, body = serve.api("GET", "/events?filters=%7B%22nope%22%3A%5B%22x%22%5D%7D"
                                 "&until=1")
    assert status == 400 and "Invalid filter 'nope'" in json.loads(body)["message"]
    status, _h, body = serve.api("GET", "/events?since=yesterday")
    assert status == 400 and "timestamp" in json.loads(body)["message"]
    df = serve.json("GET", "/v1.41/system/df")
    assert [i["Id"] for i in df["Images"]] == [serve.pyb.image_id]
    assert df["LayersSize"] > 0 and df["Containers"] == [] and df["Volumes"] == []
    out = serve.docker("system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout
    assert "Images 1" in out


def test_an_open_event_stream_does_not_hold_the_daemon_at_stop(busybox: Any,
                                                                serve_factory: Any) -> None:
    d = serve_factory(busybox)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.sock)
    s.sendall(b"GET /v1.41/events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    t = time.monotonic()
    d.stop()  # checks exit 0, no traceback, socket gone
    assert time.monotonic() - t < 1.5
    s.close()


def test_event_log_concurrent_writers_and_rotation(tmp_path: Any,
                                                   monkeypatch: Any) -> None:
    import subprocess
    import sys

    from builder.base import events
    from builder.base.state import StateRoot

    state = StateRoot.open(tmp_path / "root")
    reader = events.Reader(state, from_start=False)
    code = ("import sys; from builder.base import events; from builder.base.state import StateRoot; "
            "s = StateRoot.open(sys.argv[1]); "
            "[events.emit(s, 'image', 'tag', f'id{i}', {'name': sys.argv[2] + str(i), "
            "'pad': 'x' * 300}) for i in range(150)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(state.path), f"w{n}-"])
             for n in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    got = reader.poll()
    assert len(got) == 600  # every line whole, none interleaved
    assert {e["Actor"]["Attributes"]["name"] for e in got} == {
        f"w{n}-{i}" for n in range(4) for i in range(150)}
    # past MAX_BYTES the log turns over (bounded); a reader goes on with the new file
    monkeypatch.setattr(events, "MAX_BYTES", 64 * 1024)
    for i in range(300):
        events.emit(state, "image", "delete", f"r{i}", {"name": f"r{i}", "pad": "y" * 300})
    assert events.log_path(state).with_name("events.jsonl.1").exists()
    assert events.log_path(state).stat().st_size <= 64 * 1024 + 1024
    later = [e["Actor"]["ID"] for e in reader.poll()]
    assert later[-1] == "r299" and later == sorted(set(later), key=later.index)
    past = events.history(state, filters=events.Filters.from_json('{"event": ["delete"]}'))
    assert past and past[-1]["Actor"]["ID"] == "r299"

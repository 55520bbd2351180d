"""A small etcd v3 client over its JSON gateway (``/v3/...``): keys and values base64, int64s
as strings. Requests go to the first endpoint that answers; a dead member is skipped, and only
when every member fails is the store unavailable (one ``ClusterError`` naming the URLs).

``requests`` is imported here only: callers import this module inside functions.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from builder.base.errors import NetworkError
from registry.kinds import ErrorKind


class ClusterError(NetworkError):
    kind = ErrorKind.UNAVAILABLE


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with *prefix*."""
    b = bytearray(prefix.encode())
    b[-1] += 1
    return _b64(bytes(b))


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True)
class Event:
    type: str  # "PUT" or "DELETE"
    kv: KV
    prev: KV | None


def _kv(d: Mapping[str, Any]) -> KV:
    return KV(
        key=_unb64(d["key"]).decode(), value=_unb64(d.get("value", "")),
        mod_revision=int(d.get("mod_revision", 0)), create_revision=int(d.get("create_revision", 0)),
        lease=int(d.get("lease", 0)),
    )


def parse_urls(spec: str) -> list[str]:
    """``etcd://h1:2379,h2:2379`` (or ``http://…``, bare ``host:port``) → gateway base URLs."""
    rest = spec
    for scheme in ("etcd://", "http://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme):]
    urls = []
    for part in rest.split(","):
        part = part.strip().rstrip("/")
        if part.startswith("http://"):
            part = part[len("http://"):]
        if not part or "/" in part or part.startswith(":"):
            raise NetworkError.invalid(f"invalid cluster store {spec!r}: expected etcd://HOST:PORT[,HOST:PORT…]")
        urls.append(f"http://{part if ':' in part else part + ':2379'}")
    return urls


class Etcd:
    def __init__(self, urls: Sequence[str], *, timeout: float = 2.0, connect: float | None = None) -> None:
        self.urls = list(urls)
        self.timeout = timeout
        #: seconds to wait for a member to accept the connection (a dead host answers nothing)
        self.connect = connect or timeout
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def _post(self, path: str, body: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        errors = []
        for i, url in enumerate(self.urls):
            try:
                r = self._session.post(url + path, json=body, timeout=(self.connect, timeout or self.timeout))
            except requests.RequestException as e:
                errors.append(f"{url}: {type(e).__name__}")
                continue
            if r.status_code >= 500 or r.status_code == 429:
                errors.append(f"{url}: HTTP {r.status_code}")
                continue
            try:
                data: dict[str, Any] = r.json()
            except ValueError:  # not an etcd gateway
                errors.append(f"{url}: HTTP {r.status_code}, not an etcd answer")
                continue
            if i:  # the member that answered goes first next time
                self.urls.insert(0, self.urls.pop(i))
            if r.status_code != 200 or "error" in data:
                raise ClusterError(f"cluster store: {data.get('message') or data.get('error') or r.status_code}")
            return data
        raise ClusterError(f"cluster store unavailable ({', '.join(self.urls)}): {'; '.join(errors)}")

    # -- keys -------------------------------------------------------------------------------------
    def get(self, key: str) -> KV | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def range(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under *prefix*, and the store revision they were read at."""
        d = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)})
        return [_kv(x) for x in d.get("kvs") or []], int(d["header"]["revision"])

    def put(self, key: str, value: str | bytes, *, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self._post("/v3/kv/put", body)

    def delete(self, key: str, *, prefix: bool = False) -> int:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        return int(self._post("/v3/kv/deleterange", body).get("deleted", 0))

    def create(self, values: Mapping[str, str | bytes], *, lease: int = 0,
               require: Mapping[str, int] | None = None) -> bool:
        """Compare-and-swap: put every key of *values* only if none of them exists (and each key
        of *require* still has that mod revision); False if another writer got there first."""
        compare = [{"key": _b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"} for k in values]
        compare += [{"key": _b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)}
                    for k, rev in (require or {}).items()]
        puts = []
        for k, v in values.items():
            put: dict[str, Any] = {"key": _b64(k), "value": _b64(v)}
            if lease:
                put["lease"] = str(lease)
            puts.append({"request_put": put})
        return bool(self._post("/v3/kv/txn", {"compare": compare, "success": puts}).get("succeeded"))

    def delete_if_value(self, key: str, value: str) -> bool:
        """Delete *key* if it still holds *value* (not a later owner's)."""
        compare = [{"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}]
        ops = [{"request_delete_range": {"key": _b64(key)}}]
        return bool(self._post("/v3/kv/txn", {"compare": compare, "success": ops}).get("succeeded"))

    def delete_if(self, key: str, mod_revision: int, also: Sequence[str] = ()) -> bool:
        """Delete *key* (and *also*) if *key* is still at *mod_revision*."""
        compare = [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}]
        ops = [{"request_delete_range": {"key": _b64(k)}} for k in (key, *also)]
        return bool(self._post("/v3/kv/txn", {"compare": compare, "success": ops}).get("succeeded"))

    # -- leases -----------------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        return int(self._post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        """Refresh *lease*; its remaining TTL (0 or less: the lease is gone)."""
        d = self._post("/v3/lease/keepalive", {"ID": str(lease)})
        return int((d.get("result") or {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self._post("/v3/lease/revoke", {"ID": str(lease)})
        except ClusterError as e:
            if "not found" not in str(e):
                raise

    def status(self, url: str) -> dict[str, Any]:
        r = self._session.post(url + "/v3/maintenance/status", json={}, timeout=self.timeout)
        out: dict[str, Any] = r.json()
        return out

    # -- watch ------------------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int, *, idle: float = 30.0) -> Iterator[list[Event]]:
        """Events under *prefix* from *start_revision*, in batches, from one member's stream
        (with each event's previous value). Ends with ``ClusterError`` when the stream breaks;
        the caller re-reads and watches again from where it got."""
        body = {"create_request": {"key": _b64(prefix), "range_end": prefix_end(prefix),
                                   "start_revision": str(start_revision), "prev_kv": True,
                                   "progress_notify": True}}
        for url in list(self.urls):
            try:
                r = self._session.post(url + "/v3/watch", json=body, stream=True, timeout=(self.connect, idle))
            except requests.RequestException:
                continue
            try:
                for line in r.iter_lines():
                    if not line:
                        continue
                    res = json.loads(line).get("result") or {}
                    if res.get("canceled") or res.get("compact_revision"):
                        raise ClusterError(f"watch cancelled at {res.get('compact_revision')}")
                    evs = [Event(e.get("type", "PUT"), _kv(e["kv"]), _kv(e["prev_kv"]) if e.get("prev_kv") else None)
                           for e in res.get("events") or ()]
                    yield evs
            except (requests.RequestException, ValueError) as e:
                raise ClusterError(f"watch on {url} broke: {type(e).__name__}") from e
            finally:
                r.close()
            raise ClusterError(f"watch on {url} ended")
        raise ClusterError(f"cluster store unavailable ({', '.join(self.urls)})")

"""The typed parts of a container record: those that are lists and maps on disk, its ``Mounts``
(``MountPoint``), the networks it joins besides its own (``JoinedNetwork``) and what a start
leaves for its teardown (``SandboxRecord``, in ``state.json``); and ``state.json`` itself,
``State`` with its ``Health``. Each is read from and written back to the file's JSON shape
here, at the file's edge; ``record`` keeps the files.
"""

from __future__ import annotations

from collections.abc import Mapping

from builder.base.values import field, frozen, value_fields
from builder.network.records import EndpointRecord
from builder.runtime.containers.options import ZERO_TIME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from builder.runtime.volume.specs import Mount as VolumeMount


# frozen values (``builder.base.values``), not dataclasses nor NamedTuples: ``ps`` and ``run`` load
# the record, a dataclass execs its generated methods at import and a NamedTuple checks each
# annotation as a type (~0.2 ms a class)
@frozen
class MountPoint:
    """One ``Mounts`` entry (Docker's ``MountPoint``): a volume, bind or tmpfs the container has."""

    type: str  # volume | bind | tmpfs
    destination: str
    name: str = ""  # the volume's name
    source: str = ""  # host path ("" for a tmpfs)
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False
    #: a tmpfs's mount options; None (no key on disk) for the other types
    tmpfs_options: tuple[str, ...] | None = None

    @classmethod
    def of(cls, m: VolumeMount) -> MountPoint:
        """The record of a mount ``builder.runtime.volume`` prepared (its record shape is the volume
        package's ``to_record``)."""
        rec = m.to_record()
        if m.type == "tmpfs":
            rec["TmpfsOptions"] = list(m.tmpfs_options)
        return cls.from_json(rec)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Anonymous": self.anonymous, "Destination": self.destination, "Driver": self.driver,
            "Mode": self.mode, "Name": self.name, "Propagation": self.propagation, "RW": self.rw,
            "Source": self.source,
        }
        if self.tmpfs_options is not None:
            out["TmpfsOptions"] = list(self.tmpfs_options)
        out["Type"] = self.type
        return out  # in the sorted order the record is written (and so read back) in

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MountPoint:
        opts = d.get("TmpfsOptions")
        return cls(
            type=str(d.get("Type") or ""),
            destination=str(d.get("Destination") or ""),
            name=str(d.get("Name") or ""),
            source=str(d.get("Source") or ""),
            driver=str(d.get("Driver") or ""),
            mode=str(d.get("Mode") or ""),
            rw=bool(d.get("RW", True)),
            propagation=str(d.get("Propagation") or ""),
            anonymous=bool(d.get("Anonymous")),
            tmpfs_options=None if opts is None else tuple(str(o) for o in opts),
        )


@frozen
class JoinedNetwork:
    """A ``Networks`` entry of the record: a network joined with ``network connect`` (joined
    again at each start, with its ``aliases``), or the endpoint settings a client gave that
    the network does not act on but dockerd shows back (legacy ``links``, ``driver_opts``).
    None: the key was not given (kept apart from an empty value, as on disk)."""

    aliases: tuple[str, ...] | None = None
    links: tuple[str, ...] | None = None
    driver_opts: Mapping[str, str] | None = None

    def merged(self, other: JoinedNetwork) -> JoinedNetwork:
        """*self* with what *other* gives (its keys win)."""
        return JoinedNetwork(
            self.aliases if other.aliases is None else other.aliases,
            self.links if other.links is None else other.links,
            self.driver_opts if other.driver_opts is None else other.driver_opts,
        )

    def given(self) -> JoinedNetwork:
        """Only what a client gave for the endpoint (``Links``, ``DriverOpts``), as kept."""
        return JoinedNetwork(links=self.links, driver_opts=self.driver_opts)

    def given_json(self) -> dict[str, Any]:
        """The non-empty given settings in inspect's ``EndpointSettings`` keys."""
        out: dict[str, Any] = {}
        if self.links:
            out["Links"] = list(self.links)
        if self.driver_opts:
            out["DriverOpts"] = dict(self.driver_opts)
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.aliases is not None:
            out["Aliases"] = list(self.aliases)
        if self.driver_opts is not None:
            out["DriverOpts"] = dict(self.driver_opts)
        if self.links is not None:
            out["Links"] = list(self.links)
        return out  # sorted, as the record file holds them

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> JoinedNetwork:
        d = d or {}
        aliases, links, opts = d.get("Aliases"), d.get("Links"), d.get("DriverOpts")
        return cls(
            None if aliases is None else tuple(str(a) for a in aliases),
            None if links is None else tuple(str(x) for x in links),
            None if opts is None else {str(k): str(v) for k, v in opts.items()},
        )


@frozen
class SandboxRecord:
    """What a start persists in ``state.json`` (``sandbox``) so that its teardown can be redone
    after a crash: the sandbox's run directory and the network namespace it joined."""

    run_dir: str = ""
    netns: str = ""

    def to_json(self) -> dict[str, str]:
        return {"netns": self.netns, "run_dir": self.run_dir}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> SandboxRecord | None:
        """None for a container not started (``{}`` on disk)."""
        if not d:
            return None
        return cls(run_dir=str(d.get("run_dir") or ""), netns=str(d.get("netns") or ""))


@frozen
class HealthProbe:
    """One run of the health check: Docker's ``State.Health.Log`` entry."""

    start: str
    end: str
    exit_code: int
    output: str

    def to_json(self) -> dict[str, Any]:
        # in the sorted order the record file holds them (inspect shows that order)
        return {"End": self.end, "ExitCode": self.exit_code, "Output": self.output, "Start": self.start}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HealthProbe:
        return cls(str(d.get("Start") or ""), str(d.get("End") or ""), int(d.get("ExitCode") or 0),
                   str(d.get("Output") or ""))


@frozen
class Health:
    status: str = "starting"  # starting | healthy | unhealthy
    failing_streak: int = 0
    log: tuple[HealthProbe, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": [x.to_json() for x in self.log]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> Health | None:
        if not d:
            return None
        return cls(str(d.get("Status", "starting")), int(d.get("FailingStreak", 0)),
                   tuple(HealthProbe.from_json(x) for x in d.get("Log") or ()))


@frozen
class State:
    """What changes while a container lives; Docker's ``State`` plus the pids we supervise."""

    #: created | running | restarting | exited | dead | removing; a start in progress is
    #: ``created`` with a supervisor (``starting``), as Docker shows it
    status: str = "created"
    pid: int = 0
    pid_start: int = 0
    supervisor_pid: int = 0
    supervisor_start: int = 0
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    restart_count: int = 0
    #: set by stop/kill from the CLI: the restart policy must not bring it back
    stopped_by_user: bool = False
    #: ``pause``: its processes are frozen (cgroup v2 ``cgroup.freeze``); status stays running
    paused: bool = False
    health: Health | None = None
    #: what the sandbox persisted so teardown can be redone after a crash
    sandbox: SandboxRecord | None = None
    #: network name -> its endpoint while running (addresses, published ports)
    endpoints: Mapping[str, EndpointRecord] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    @property
    def starting(self) -> bool:
        """A supervisor has claimed the record for a first start not finished yet."""
        return self.status == "created" and self.supervisor_pid != 0

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {name: getattr(self, name) for name in value_fields(self)}
        d["health"] = self.health.to_json() if self.health else None
        d["sandbox"] = self.sandbox.to_json() if self.sandbox else {}
        d["endpoints"] = {k: v.to_json() for k, v in self.endpoints.items()}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> State:
        known = set(value_fields(cls))
        kw = {k: v for k, v in d.items() if k in known}
        kw["health"] = Health.from_json(d.get("health"))
        kw["sandbox"] = SandboxRecord.from_json(d.get("sandbox"))
        kw["endpoints"] = {k: EndpointRecord.from_json(v) for k, v in (d.get("endpoints") or {}).items()}
        return cls(**kw)

    def docker(self) -> dict[str, Any]:
        """Docker's ``inspect`` ``State`` object."""
        out: dict[str, Any] = {
            "Status": "paused" if self.paused and self.status == "running" else self.status,
            "Running": self.status in ("running", "restarting"),
            "Paused": self.paused and self.status == "running",
            "Restarting": self.status == "restarting",
            "OOMKilled": self.oom_killed,
            "Dead": self.status == "dead",
            "Pid": self.pid if self.status == "running" else 0,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }
        if self.health is not None:
            out["Health"] = self.health.to_json()
        return out

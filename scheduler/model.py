"""The job model: states, their named sets, and typed rows built from the store in one place.

Rows leave the store only through `Job.of`, `Attempt.of` and `Node.of`: JSON columns are decoded
there, once, and nobody else indexes a row by column name. The states (DESIGN.md, job states):

    job      PENDING -> STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | TIMEOUT
             (an attempt that ends with retries left, or that never really ran, goes back to PENDING)
    attempt  STARTING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED | TIMEOUT | ABORTED
             (ABORTED: it never really ran, e.g. a host did not answer the start; not charged)
    node     STARTING -> RUNNING -> EXITED | LOST
             (LOST: its host stopped answering; what it may still run is swept when it answers again)

Every write of these states happens in lifecycle.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class _StrEnum(str, Enum):
    """Compares, binds to SQLite and dumps to JSON as its value; prints as its value too."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class JobState(_StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"


ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})  # an attempt exists and may have processes
LIVE = frozenset({JobState.PENDING}) | ACTIVE  # not over yet
TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})


class AttemptState(_StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    ABORTED = "ABORTED"


class NodeState(_StrEnum):
    PENDING = "PENDING"  # the schema's default; the loop inserts nodes as STARTING
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    LOST = "LOST"


NODE_OVER = frozenset({NodeState.EXITED, NodeState.LOST})


def sql_set(states) -> str:
    """`('A', 'B')` for an IN clause over a named set (constants only, never user input)."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(states, key=lambda s: s.value)) + ")"


def _json(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    state: JobState
    reason: str
    command: tuple[str, ...]
    nodes: int
    gpus_per_node: int
    procs_asked: int | None  # --procs-per-node as submitted (CPU jobs); see procs_per_node
    data: str | None  # NAME@VERSION, pinned at submit
    priority: int
    time_limit: float | None
    retries: int
    attempt: int  # the current (or last) attempt; 0 before the first start
    env: Mapping[str, str]
    tags: tuple[str, ...]
    user: str | None
    submitted_at: float
    started_at: float | None
    ended_at: float | None
    cancel_requested: bool
    metrics: Mapping[str, Any] | None  # the newest metrics line
    metrics_at: float | None
    progress_at: float | None
    flags: tuple[str, ...]

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            id=row["id"], name=row["name"], state=JobState(row["state"]), reason=row["reason"],
            command=tuple(_json(row["command"], [])), nodes=row["nodes"], gpus_per_node=row["gpus_per_node"],
            procs_asked=row["procs_per_node"], data=row["data"], priority=row["priority"], time_limit=row["time_limit"],
            retries=row["retries"], attempt=row["attempt"], env=_json(row["env"], {}), tags=tuple(_json(row["tags"], [])),
            user=row["user"], submitted_at=row["submitted_at"], started_at=row["started_at"], ended_at=row["ended_at"],
            cancel_requested=bool(row["cancel_requested"]), metrics=_json(row["metrics"], None),
            metrics_at=row["metrics_at"], progress_at=row["progress_at"], flags=tuple(_json(row["flags"], [])),
        )  # fmt: skip

    @property
    def procs_per_node(self) -> int:
        return rules.procs_per_node(self.gpus_per_node, self.procs_asked)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class HostReport:
    """What teardown found on one host: how many of the job's processes, what is still there."""

    host: str
    found: int = 0  # processes of the job seen on the host
    killed: int = 0  # of those, how many needed SIGKILL
    left: tuple[str, ...] = ()  # what still runs: "pid 123 (python -m trainer)", "GPU 0 still lists pid 123"
    error: str | None = None  # the host could not be asked

    @property
    def verified(self) -> bool:
        return self.error is None and not self.left

    def to_json(self) -> dict:
        return {"host": self.host, "found": self.found, "killed": self.killed, "left": list(self.left), "error": self.error}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> HostReport:
        return cls(d["host"], d.get("found", 0), d.get("killed", 0), tuple(d.get("left", ())), d.get("error"))


@dataclass(frozen=True)
class Verdict:
    """The teardown's answer for a whole attempt: the hosts asked, and those not asked (silent, or no
    longer in hosts.toml). Verified only when every host was asked and is clean."""

    reports: tuple[HostReport, ...] = ()
    unreachable: tuple[tuple[str, str], ...] = ()  # (host, why it was not asked)

    @classmethod
    def of(cls, reports, unreachable: Mapping[str, str] = {}) -> Verdict:
        return cls(tuple(reports), tuple(unreachable.items()))

    @property
    def verified(self) -> bool:
        return not self.unreachable and self.asked_clean

    @property
    def asked_clean(self) -> bool:
        """Every host that was asked answered, and holds nothing of the job."""
        return all(r.verified for r in self.reports)

    @property
    def dirty(self) -> tuple[HostReport, ...]:
        """Per host what is left or why it did not answer (empty when verified)."""
        silent = tuple(HostReport(h, error=why) for h, why in self.unreachable)
        return tuple(r for r in self.reports if not r.verified) + silent

    def sentence(self) -> str:
        clean = [r.host for r in self.reports if r.verified]
        dirty = [f"{r.host} still runs {', '.join(r.left)}" for r in self.reports if r.left]
        silent = [f"{r.host} did not answer ({r.error})" for r in self.reports if r.error]
        silent += [f"{h} did not answer ({why})" for h, why in self.unreachable]
        if not dirty and not silent:
            killed = sum(r.killed for r in self.reports)
            extra = f" ({killed} needed SIGKILL)" if killed else ""
            return f"verified: no process left on {', '.join(clean)}{extra}"
        parts = ["NOT verified: " + "; ".join(dirty + silent)]
        if clean:
            parts.append(f"no process left on {', '.join(clean)}")
        return "; ".join(parts)

    def to_json(self) -> str:
        d = {"hosts": [r.to_json() for r in self.reports], "unreachable": dict(self.unreachable)}
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> Verdict | None:
        if not text:
            return None
        d = json.loads(text)
        return cls(tuple(HostReport.from_json(r) for r in d["hosts"]), tuple(d["unreachable"].items()))


@dataclass(frozen=True)
class Attempt:
    job_id: int
    attempt: int
    state: AttemptState
    reason: str
    started_at: float | None
    ended_at: float | None
    verdict: Verdict | None = None  # what the teardown found when the attempt ended

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Attempt:
        return cls(
            row["job_id"], row["attempt"], AttemptState(row["state"]), row["reason"], row["started_at"], row["ended_at"],
            Verdict.from_json(row["verdict"]),
        )


@dataclass(frozen=True)
class Node:
    job_id: int
    attempt: int
    node_rank: int
    host: str
    gpus: tuple[int, ...]
    port: int | None
    run_dir: str | None
    data_path: str | None
    pid: int | None
    state: NodeState
    exit_code: int | None
    log_offset: int
    last_seen: float | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Node:
        return cls(
            row["job_id"], row["attempt"], row["node_rank"], row["host"], tuple(_json(row["gpus"], [])), row["port"],
            row["run_dir"], row["data_path"], row["pid"], NodeState(row["state"]), row["exit_code"], row["log_offset"],
            row["last_seen"],
        )

    @property
    def over(self) -> bool:
        return self.state in NODE_OVER

    def to_json(self) -> dict:
        """The `show --json` shape of a node."""
        return {
            "host": self.host, "node_rank": self.node_rank, "gpus": list(self.gpus), "port": self.port,
            "state": self.state.value, "exit_code": self.exit_code, "pid": self.pid, "run_dir": self.run_dir,
            "data_path": self.data_path, "last_seen": self.last_seen,
        }  # fmt: skip


@dataclass(frozen=True)
class NodePlan:
    """One node of an attempt about to start, as lifecycle.start_attempt records it."""

    node_rank: int
    host: str
    gpus: tuple[int, ...]
    port: int
    run_dir: str
    data_path: str | None = None


@dataclass(frozen=True)
class Ending:
    """How an attempt ends, as the loop or a cancel decided it; lifecycle.end_attempt records it."""

    state: AttemptState  # SUCCEEDED FAILED TIMEOUT CANCELLED ABORTED
    reason: str
    unreachable: Mapping[str, str] = field(default_factory=dict)  # host -> why it did not answer
    actor: str | None = None


from . import rules  # noqa: E402  (rules reads the state sets above)

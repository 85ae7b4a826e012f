"""Jobs as the user sees them: submit (validated), find by id or name, cancel intent, summaries, show.

This module only writes intents into the store; the scheduler loop (loop.py) acts on them. Every
check happens before the single submit transaction, so a rejected job leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from . import bounds
from . import policy
from .errors import NotFound, UserError
from .inventory import NAME_RE, Inventory
from .store import LIVE_STATES, TERMINAL_STATES, Store, dumps, loads

DEFAULT_COMMAND = ("python", "-m", "trainer")
MAX_NAME = 100
UNKNOWN_GPUS = 1 << 16
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The scheduler sets these per node; a job overriding them would defeat placement or bookkeeping.
RESERVED_ENV = re.compile(r"^(CUDA_VISIBLE_DEVICES|HEADNODE_\w*)$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class JobSpec:
    """What `headnode submit` asks for, before validation."""

    command: list[str] = field(default_factory=lambda: list(DEFAULT_COMMAND))
    name: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int | None = None  # CPU jobs only (None: one); a GPU job runs one process per GPU
    data: str | None = None
    priority: int = 0
    time_limit: float | None = None  # seconds
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


# --- parsing user input ------------------------------------------------------------------------


def parse_time_limit(text: str) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h`, `1h30m`, `1d` or `H:MM:SS` / `MM:SS`."""
    t = text.strip().lower()
    seconds: float | None = None
    if len(t) > 40:  # int() of thousands of digits is slow, then refused
        t = ""
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    elif re.fullmatch(r"\d+(:[0-5]\d){1,2}", t):
        seconds = 0.0
        for part in t.split(":"):
            seconds = seconds * 60 + int(part)
    elif t and _DURATION_RE.sub("", t) == "":
        seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_RE.findall(t))
    if seconds is None or seconds <= 0:
        raise UserError(
            f"bad time limit {text[:40]!r}{'…' if len(text) > 40 else ''}",
            "it must be a positive duration",
            "write seconds or a duration such as 90s, 30m, 2h, 1h30m or 1:30:00",
        )
    if seconds > bounds.MAX_TIME_LIMIT:
        raise UserError(f"bad time limit {bounds.shown(text)}", "it is longer than a year", "omit it for no limit", field="time_limit")
    return seconds


# Names whose values are credentials: never written to the store, events or `show`.
SECRET_ENV = re.compile(r"(^|_)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)($|_)", re.I)


def parse_env(items: list[str]) -> dict[str, str]:
    """`K=V` pairs; values are kept verbatim (they reach the job as one argv word each)."""
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not ENV_NAME_RE.match(key):
            raise UserError(
                f"bad environment variable {item!r}",
                "it must be NAME=VALUE with a NAME of letters, digits and '_' not starting with a digit",
                "e.g. --env NCCL_DEBUG=INFO",
            )
        if key == "PET_NPROC_PER_NODE":  # torchrun's own setting: our --nproc-per-node would override it
            raise UserError(
                f"cannot set {key} with --env",
                "the scheduler passes torchrun the processes per node itself",
                "use --procs-per-node N for a CPU job (a GPU job runs one process per GPU)",
            )
        if RESERVED_ENV.match(key):
            raise UserError(
                f"cannot set {key} with --env",
                "the scheduler sets it for every node of the job",
                "use --gpus-per-node for GPUs and --data for datasets",
            )
        if "\0" in value:
            raise UserError(f"bad value for {key}", "it contains a NUL byte", "remove it")
        if SECRET_ENV.search(key) and not key.endswith("_FILE") and value:
            raise UserError(
                f"refusing to store {key} in the job store",
                "it looks like a credential, and job environments are kept and shown to everyone who can read the store",
                f"put the secret in a file on the hosts and pass its path, e.g. --env {key}_FILE=/etc/secrets/{key.lower()}",
            )
        env[key] = value
    return env


def default_name(command: list[str]) -> str:
    """A short readable stem: `python -m trainer` -> trainer, `python train.py` -> train."""
    words = list(command)
    base = os.path.basename(words[0]) if words else "job"
    if base.startswith("python") and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            base = words[2].rsplit(".", 1)[-1]
        elif not words[1].startswith("-"):
            base = os.path.splitext(os.path.basename(words[1]))[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")
    return stem[:40] or "job"


# --- submit --------------------------------------------------------------------------------------


def validate(store: Store, inventory: Inventory, spec: JobSpec) -> JobSpec:
    """Raise UserError for anything that could never run; return the spec with data resolved."""
    bounds.check_job(spec)
    if not spec.command or not spec.command[0]:
        raise UserError("empty command", "there is nothing to run", "give the command after `--`, or omit it to run the trainer")
    if any("\0" in w for w in spec.command):
        raise UserError("bad command", "an argument contains a NUL byte", "remove it")
    if spec.name is not None:
        _check_name(spec.name)
    if spec.nodes < 1:
        raise UserError(f"bad --nodes {spec.nodes}", "a job needs at least one node", "use --nodes 1 or more")
    if spec.gpus_per_node < 0:
        raise UserError(f"bad --gpus-per-node {spec.gpus_per_node}", "it cannot be negative", "use 0 for a CPU-only job")
    if spec.procs_per_node is not None:
        if spec.gpus_per_node:
            raise UserError(
                "--procs-per-node is for CPU jobs only",
                f"with --gpus-per-node {spec.gpus_per_node} each node runs one process per GPU",
                "drop --procs-per-node, or use --gpus-per-node 0",
            )
        if spec.procs_per_node < 1:
            raise UserError(f"bad --procs-per-node {spec.procs_per_node}", "a node runs at least one process", "use 1 or more")
    if spec.retries < 0:
        raise UserError(f"bad --retries {spec.retries}", "it cannot be negative", "use 0 for no retries")
    if spec.time_limit is not None and spec.time_limit <= 0:
        raise UserError(f"bad time limit {spec.time_limit}", "it must be positive", "omit it for no limit")
    for tag in spec.tags:
        if not NAME_RE.match(tag):
            raise UserError(f"bad tag {tag!r}", "tags contain only letters, digits, '.', '_' and '-'", "use a tag from hosts.toml")
    parse_env([f"{k}={v}" for k, v in spec.env.items()])
    job = policy.PendingJob(id=0, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node, tags=frozenset(spec.tags))
    reason = policy.feasible(_host_views(store, inventory), job)
    if reason:
        raise UserError(
            "this job could never start",
            reason,
            "ask for fewer nodes, GPUs per node or tags, or add hosts to hosts.toml",
        )
    data = _resolve_data(store, spec.data) if spec.data else None
    return replace(spec, data=data)


def submit(store: Store, inventory: Inventory, spec: JobSpec, *, actor: str | None = None) -> dict:
    """Validate, then one transaction: the PENDING row and its `submitted` event. Returns the row."""
    spec = validate(store, inventory, spec)
    actor = actor or store.actor
    with store.tx():
        cur = store.execute(
            "INSERT INTO jobs (name, state, reason, command, nodes, gpus_per_node, procs_per_node, data, priority,"
            " time_limit, retries, attempt, env, tags, user, submitted_at)"
            " VALUES (?, 'PENDING', 'waiting for resources', ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                spec.name or "",
                dumps(spec.command),
                spec.nodes,
                spec.gpus_per_node,
                spec.procs_per_node,
                spec.data,
                spec.priority,
                spec.time_limit,
                spec.retries,
                dumps(spec.env),
                dumps(spec.tags),
                actor.split("@", 1)[0],
                time.time(),
            ),
        )
        job_id = cur.lastrowid
        if not spec.name:  # the id makes the default name unique
            store.execute("UPDATE jobs SET name = ? WHERE id = ?", (f"{default_name(spec.command)}-{job_id}", job_id))
        shape = f"{spec.nodes} node(s) x {spec.gpus_per_node} GPU(s)"
        if spec.procs_per_node:
            shape += f" x {spec.procs_per_node} process(es)"
        store.event(f"job:{job_id}", "submitted", shape, actor=actor)
    return get(store, job_id)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME:
        raise UserError(f"bad job name {name[:MAX_NAME]!r}", f"it must have 1 to {MAX_NAME} characters", "choose another --name")
    if name.isdigit():
        raise UserError(f"bad job name {name!r}", "a name of digits only would read as a job id", "add a letter")
    # Control characters would rewrite the terminal of whoever runs `queue`; anything else is kept.
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"bad job name {name!r}", "it contains control characters", "use printable characters only")


def procs_per_node(job: dict) -> int:
    """The processes torchrun starts on each node: one per GPU, else as asked (default one)."""
    return job["gpus_per_node"] or job["procs_per_node"] or 1


def host_gpus(store: Store, inventory: Inventory) -> dict[str, int | None]:
    """GPUs per inventory host: declared, else detected by the last probe, else None (not known yet)."""
    detected = {r["name"]: r["gpus_detected"] for r in store.query("SELECT name, gpus_detected FROM hosts")}
    return {h.name: h.gpus if h.gpus is not None else detected.get(h.name) for h in inventory.hosts}


def _host_views(store: Store, inventory: Inventory) -> list[policy.HostView]:
    """Every inventory host at full size. A host whose GPUs are not known yet counts as big enough:
    refusing would be a guess, and the job simply waits for the probe."""
    gpus = host_gpus(store, inventory)
    return [
        policy.HostView(name=h.name, gpus=UNKNOWN_GPUS if gpus[h.name] is None else gpus[h.name], tags=frozenset(h.tags))
        for h in inventory.hosts
    ]


def _resolve_data(store: Store, ref: str) -> str:
    """Pin the exact version now (`NAME` means its newest): a job records what it trained on."""
    from .data import resolve

    row = resolve(store, ref)
    return f"{row['name']}@{row['version']}"


# --- lookup --------------------------------------------------------------------------------------


def get(store: Store, job_id: int) -> dict:
    row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        raise NotFound(f"job {job_id} not found", "no job has that id", "run `headnode queue --all` to list jobs")
    return row


def find(store: Store, ref: str) -> dict:
    """A job by id (digits) or by name; a name shared by several jobs is refused, listing their ids."""
    ref = ref.strip()
    if bounds.is_job_id(ref):
        return get(store, bounds.job_id(ref))
    rows = store.query("SELECT * FROM jobs WHERE name = ? ORDER BY id", (ref,))
    if not rows:
        raise NotFound(f"job {ref!r} not found", "no job has that id or name", "run `headnode queue --all` to list jobs")
    if len(rows) > 1:
        ids = ", ".join(str(r["id"]) for r in rows)
        raise UserError(f"job name {ref!r} is ambiguous", f"jobs {ids} have it", "use the job id instead")
    return rows[0]


# --- cancel intent -------------------------------------------------------------------------------


def request_cancel(store: Store, job_id: int, *, actor: str | None = None) -> str:
    """Record the intent; returns the state afterwards.

    A PENDING job has no process anywhere (a retry is requeued only after its processes are gone), so
    it is CANCELLED here. A STARTING/RUNNING one is only flagged: the loop (or teardown.cancel_now when
    no loop runs) marks it CANCELLED once it has verified that nothing is left on any host.
    """
    actor = actor or store.actor
    obj = f"job:{job_id}"
    with store.tx():
        job = get(store, job_id)
        if job["state"] == "PENDING":
            reason = f"cancelled by {actor} before it started"
            store.execute(
                "UPDATE jobs SET state = 'CANCELLED', reason = ?, ended_at = ? WHERE id = ?",
                (reason, time.time(), job_id),
            )
            store.event(obj, "CANCELLED", reason, actor=actor)
            return "CANCELLED"
        if job["state"] in ("STARTING", "RUNNING") and not job["cancel_requested"]:
            store.execute(
                "UPDATE jobs SET cancel_requested = 1, reason = ? WHERE id = ?",
                (f"cancel requested by {actor}; stopping every node", job_id),
            )
            store.event(obj, "cancel requested", "", actor=actor)
        return job["state"]


# --- reading -------------------------------------------------------------------------------------

_ORDER = "CASE state WHEN 'RUNNING' THEN 0 WHEN 'STARTING' THEN 0 WHEN 'PENDING' THEN 1 ELSE 2 END"


def summaries(store: Store, *, include_finished: bool = False) -> list[dict]:
    """Queue rows: live jobs first (running, then pending in the order they will be considered:
    priority, then submit order), then finished ones, newest first."""
    states = LIVE_STATES + (TERMINAL_STATES if include_finished else ())
    marks = ",".join("?" * len(states))
    rows = store.query(
        f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY {_ORDER},"
        " CASE WHEN state = 'PENDING' THEN -priority ELSE 0 END, COALESCE(-ended_at, 0), id",
        states,
    )
    hosts = _current_hosts(store)
    return [summary(r, hosts.get(r["id"], ())) for r in rows]


def summary(job: dict, hosts: Sequence[str] = ()) -> dict:
    metrics = loads(job["metrics"]) or {}
    return {
        "id": job["id"],
        "name": job["name"],
        "state": job["state"],
        "reason": job["reason"],
        "nodes": job["nodes"],
        "gpus_per_node": job["gpus_per_node"],
        "procs_per_node": procs_per_node(job),
        "priority": job["priority"],
        "submitted_at": job["submitted_at"],
        "started_at": job["started_at"],
        "ended_at": job["ended_at"],
        "attempt": job["attempt"],
        "step": metrics.get("step"),
        "loss": metrics.get("loss"),
        "user": job["user"],
        "data": job["data"],
        "hosts": list(hosts),
        "flags": loads(job["flags"], []),
    }


def _current_hosts(store: Store) -> dict[int, list[str]]:
    """Hosts of every live job's current attempt, by node rank."""
    rows = store.query(
        "SELECT n.job_id, n.host FROM job_nodes n JOIN jobs j ON j.id = n.job_id AND j.attempt = n.attempt"
        " WHERE j.state IN ('STARTING', 'RUNNING') ORDER BY n.job_id, n.node_rank"
    )
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r["job_id"], []).append(r["host"])
    return out


def nodes(store: Store, job_id: int, attempt: int) -> list[dict]:
    """Placement of one attempt, by node rank."""
    rows = store.query(
        "SELECT * FROM job_nodes WHERE job_id = ? AND attempt = ? ORDER BY node_rank", (job_id, attempt)
    )
    return [
        {
            "host": r["host"],
            "node_rank": r["node_rank"],
            "gpus": loads(r["gpus"], []),
            "port": r["port"],
            "state": r["state"],
            "exit_code": r["exit_code"],
            "pid": r["pid"],
            "run_dir": r["run_dir"],
            "data_path": r["data_path"],
            "last_seen": r["last_seen"],
        }
        for r in rows
    ]


def show(store: Store, job_id: int) -> dict:
    """The whole story of one job: the `show --json` document."""
    job = get(store, job_id)
    attempts = [
        {**a, "nodes": nodes(store, job_id, a["attempt"])}
        for a in store.query(
            "SELECT attempt, state, reason, started_at, ended_at FROM attempts WHERE job_id = ? ORDER BY attempt",
            (job_id,),
        )
    ]
    events = store.query(
        "SELECT ts, actor, what, reason FROM events WHERE object = ? ORDER BY id", (f"job:{job_id}",)
    )
    return {
        "id": job["id"],
        "name": job["name"],
        "state": job["state"],
        "reason": job["reason"],
        "attempt": job["attempt"],
        "attempts": attempts,
        "data": job["data"],
        "nodes": nodes(store, job_id, job["attempt"]),
        "metrics": loads(job["metrics"]),
        "metrics_at": job["metrics_at"],
        "command": loads(job["command"], []),
        "env": loads(job["env"], {}),
        "tags": loads(job["tags"], []),
        "gpus_per_node": job["gpus_per_node"],
        "procs_per_node": procs_per_node(job),
        "nodes_requested": job["nodes"],
        "priority": job["priority"],
        "time_limit": job["time_limit"],
        "retries": job["retries"],
        "user": job["user"],
        "submitted_at": job["submitted_at"],
        "started_at": job["started_at"],
        "ended_at": job["ended_at"],
        "cancel_requested": bool(job["cancel_requested"]),
        "flags": loads(job["flags"], []),
        "events": events,
    }


def wait(store: Store, job_id: int, *, timeout: float | None = None, poll: float = 0.5) -> dict:
    """Block until the job is in a terminal state; returns the row (still live if timed out)."""
    deadline = float("inf") if timeout is None else time.monotonic() + timeout
    while True:
        job = get(store, job_id)
        left = deadline - time.monotonic()
        if job["state"] in TERMINAL_STATES or left <= 0:
            return job
        time.sleep(min(poll, left))

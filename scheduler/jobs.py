"""Jobs as the user sees them: submit (validated), find by id or name, typed reads, summaries, show.

Every check happens before lifecycle.submit's single transaction, so a rejected job leaves nothing
behind. Reads return model.Job / Attempt / Node; the `--json` documents are built from those.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from . import bounds
from . import lifecycle, policy, rules
from .errors import NotFound, UserError
from .inventory import NAME_RE, Inventory
from .model import ACTIVE, LIVE, TERMINAL, Attempt, Job, Node, sql_set
from .store import Store

DEFAULT_COMMAND = ("python", "-m", "trainer")
# SSH runs a node's start as `sh -c COMMAND`: one argv string, which the kernel caps at MAX_ARG_STRLEN
# (32 pages) -- past it the exec fails with E2BIG on the host, every time. Leave room for our part.
MAX_ARG_STRLEN = 131_072
MAX_START_BYTES = MAX_ARG_STRLEN - 16_384
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
            field="time_limit",
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
                field="env",
            )
        if key == "PET_NPROC_PER_NODE":  # torchrun's own setting: our --nproc-per-node would override it
            raise UserError(
                f"cannot set {key} with --env",
                "the scheduler passes torchrun the processes per node itself",
                "use --procs-per-node N for a CPU job (a GPU job runs one process per GPU)",
                field="env",
            )
        if RESERVED_ENV.match(key):
            raise UserError(
                f"cannot set {key} with --env",
                "the scheduler sets it for every node of the job",
                "use --gpus-per-node for GPUs and --data for datasets",
                field="env",
            )
        if "\0" in value:
            raise UserError(f"bad value for {key}", "it contains a NUL byte", "remove it", field="env")
        if SECRET_ENV.search(key) and not key.endswith("_FILE") and value:
            raise UserError(
                f"refusing to store {key} in the job store",
                "it looks like a credential, and job environments are kept and shown to everyone who can read the store",
                f"put the secret in a file on the hosts and pass its path, e.g. --env {key}_FILE=/etc/secrets/{key.lower()}",
                field="env",
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
        raise UserError(
            "empty command",
            "there is nothing to run",
            "give the command after `--`, or omit it to run the trainer",
            field="command",
        )
    if any("\0" in w for w in spec.command):
        raise UserError("bad command", "an argument contains a NUL byte", "remove it", field="command")
    if spec.name is not None:
        _check_name(spec.name)
    # The ranges of every number are bounds.check_job's (above); what is left are rules across fields.
    if spec.procs_per_node is not None and spec.gpus_per_node:
        raise UserError(
            "--procs-per-node is for CPU jobs only",
            f"with --gpus-per-node {spec.gpus_per_node} each node runs one process per GPU",
            "drop --procs-per-node, or use --gpus-per-node 0",
            field="gpus_per_node",
        )
    for tag in spec.tags:
        if not NAME_RE.match(tag):
            raise UserError(
                f"bad tag {tag!r}",
                "tags contain only letters, digits, '.', '_' and '-'",
                "use a tag from hosts.toml",
                field="tags",
            )
    parse_env([f"{k}={v}" for k, v in spec.env.items()])
    size = len(shlex.join(spec.command).encode()) + sum(len(f"{k}={v}".encode()) + 3 for k, v in spec.env.items())
    if size > MAX_START_BYTES:
        raise UserError(
            f"the command and environment are too large to start ({size:,} bytes)",
            f"a node starts with them in one argument of its host's shell, and Linux takes at most {MAX_ARG_STRLEN:,}"
            " bytes there (headnode's own part included)",
            "put long arguments in a file on the hosts and pass its path",
            field="command",
        )
    job = policy.PendingJob(id=0, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node, tags=frozenset(spec.tags))
    reason = policy.feasible(_host_views(store, inventory), job)
    if reason:
        raise UserError(
            "this job could never start",
            reason,
            "ask for fewer nodes, GPUs per node or tags, or add hosts to hosts.toml",
            field="nodes",
        )
    try:
        data = _resolve_data(store, spec.data) if spec.data else None
    except UserError as e:
        e.field = e.field or "data"
        raise
    return replace(spec, data=data)


def submit(store: Store, inventory: Inventory, spec: JobSpec, *, actor: str | None = None) -> Job:
    """Validate, then one transaction: the PENDING row and its `submitted` event."""
    spec = validate(store, inventory, spec)
    job_id = lifecycle.submit(store, spec, actor=actor or store.actor, default_name=default_name(spec.command))
    return get(store, job_id)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME:
        raise UserError(
            f"bad job name {name[:MAX_NAME]!r}",
            f"it must have 1 to {MAX_NAME} characters",
            "choose another --name",
            field="name",
        )
    if name.isdigit():
        raise UserError(f"bad job name {name!r}", "a name of digits only would read as a job id", "add a letter", field="name")
    # Control characters would rewrite the terminal of whoever runs `queue`; anything else is kept.
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UserError(f"bad job name {name!r}", "it contains control characters", "use printable characters only", field="name")


def host_gpus(store: Store, inventory: Inventory) -> dict[str, int | None]:
    """GPUs per inventory host: declared, else detected by the last probe, else None (not known yet)."""
    detected = {r["name"]: r["gpus_detected"] for r in store.query("SELECT name, gpus_detected FROM hosts")}
    return {h.name: rules.host_gpus(h.gpus, detected.get(h.name)) for h in inventory.hosts}


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


def get(store: Store, job_id: int) -> Job:
    row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        raise NotFound(f"job {job_id} not found", "no job has that id", "run `headnode queue --all` to list jobs")
    return Job.of(row)


def find(store: Store, ref: str) -> Job:
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
    return Job.of(rows[0])


def nodes(store: Store, job_id: int, attempt: int) -> list[Node]:
    """Placement of one attempt, by node rank."""
    rows = store.query("SELECT * FROM job_nodes WHERE job_id = ? AND attempt = ? ORDER BY node_rank", (job_id, attempt))
    return [Node.of(r) for r in rows]


def run_dirs(store: Store, job_id: int) -> dict[str, str]:
    """The job's run dir on each host it ever ran on, as recorded at launch (the newest attempt's)."""
    rows = store.query("SELECT host, run_dir FROM job_nodes WHERE job_id = ? AND run_dir IS NOT NULL ORDER BY attempt",
                       (job_id,))  # fmt: skip
    return {r["host"]: r["run_dir"] for r in rows}


def attempts(store: Store, job_id: int) -> list[Attempt]:
    return [Attempt.of(r) for r in store.query("SELECT * FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))]


def attempt(store: Store, job_id: int, number: int) -> Attempt | None:
    row = store.one("SELECT * FROM attempts WHERE job_id = ? AND attempt = ?", (job_id, number))
    return Attempt.of(row) if row else None


def active(store: Store) -> list[Job]:
    """STARTING and RUNNING jobs, by id."""
    return [Job.of(r) for r in store.query(f"SELECT * FROM jobs WHERE state IN {sql_set(ACTIVE)} ORDER BY id")]


# --- reading -------------------------------------------------------------------------------------

_ORDER = "CASE state WHEN 'RUNNING' THEN 0 WHEN 'STARTING' THEN 0 WHEN 'PENDING' THEN 1 ELSE 2 END"


def summaries(store: Store, *, include_finished: bool = False) -> list[dict]:
    """Queue rows: live jobs first (running, then pending in the order they will be considered:
    priority, then submit order), then finished ones, newest first."""
    states = LIVE | (TERMINAL if include_finished else frozenset())
    rows = store.query(
        f"SELECT * FROM jobs WHERE state IN {sql_set(states)} ORDER BY {_ORDER},"
        " CASE WHEN state = 'PENDING' THEN -priority ELSE 0 END, COALESCE(-ended_at, 0), id"
    )
    hosts = _current_hosts(store)
    return [summary(job, hosts.get(job.id, ())) for job in map(Job.of, rows)]


def summary(job: Job, hosts: Sequence[str] = ()) -> dict:
    """The `queue --json` shape of one job."""
    metrics = job.metrics or {}
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "reason": job.reason,
        "nodes": job.nodes,
        "gpus_per_node": job.gpus_per_node,
        "procs_per_node": job.procs_per_node,
        "priority": job.priority,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "attempt": job.attempt,
        "step": metrics.get("step"),
        "loss": metrics.get("loss"),
        "user": job.user,
        "data": job.data,
        "hosts": list(hosts),
        "flags": list(job.flags),
    }


def _current_hosts(store: Store) -> dict[int, list[str]]:
    """Hosts of every live job's current attempt, by node rank."""
    rows = store.query(
        "SELECT n.job_id, n.host FROM job_nodes n JOIN jobs j ON j.id = n.job_id AND j.attempt = n.attempt"
        f" WHERE j.state IN {sql_set(ACTIVE)} ORDER BY n.job_id, n.node_rank"
    )
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r["job_id"], []).append(r["host"])
    return out


def show(store: Store, job_id: int) -> dict:
    """The whole story of one job: the `show --json` document."""
    job = get(store, job_id)
    attempts_ = [
        {
            "attempt": a.attempt, "state": a.state.value, "reason": a.reason, "started_at": a.started_at,
            "ended_at": a.ended_at, "verified": a.verdict.verified if a.verdict else None,
            "nodes": [n.to_json() for n in nodes(store, job_id, a.attempt)],
        }
        for a in attempts(store, job_id)
    ]  # fmt: skip
    events = store.query(
        "SELECT ts, actor, what, reason FROM events WHERE object = ? ORDER BY id", (f"job:{job_id}",)
    )
    return {
        "id": job.id,
        "name": job.name,
        "state": job.state.value,
        "reason": job.reason,
        "attempt": job.attempt,
        "attempts": attempts_,
        "data": job.data,
        "nodes": [n.to_json() for n in nodes(store, job_id, job.attempt)],
        "metrics": job.metrics,
        "metrics_at": job.metrics_at,
        "command": list(job.command),
        "env": dict(job.env),
        "tags": list(job.tags),
        "gpus_per_node": job.gpus_per_node,
        "procs_per_node": job.procs_per_node,
        "nodes_requested": job.nodes,
        "priority": job.priority,
        "time_limit": job.time_limit,
        "retries": job.retries,
        "user": job.user,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "cancel_requested": job.cancel_requested,
        "flags": list(job.flags),
        "events": events,
    }

"""What each screen shows, read from the store as plain rows. No Textual here: these run in
thread workers, each with its own Store, and the benchmark and tests call them directly.

Rows are `{key: tuple}` in the column order of the screen that shows them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from scheduler import rules
from scheduler.hosts import gpus_in_use
from scheduler.inventory import Inventory
from scheduler import jobs
from scheduler.errors import NotFound
from scheduler.model import LIVE, Attempt, Job, Node, sql_set
from scheduler.store import Store



@dataclass
class Overview:
    """The header line: who runs the loop, and the cluster at a glance."""

    holder: str | None  # "pid@host" of the lease holder, None when no live lease
    last_cycle_at: float | None
    hosts_up: int
    hosts: int
    gpus_used: int
    gpus: int
    running: int
    pending: int


def overview(store: Store, inventory: Inventory, now: float) -> Overview:
    lease = store.one("SELECT holder, expires_at, last_cycle_at FROM lease WHERE name = 'scheduler'")
    live = lease is not None and lease["expires_at"] > now
    counts = dict(store.conn.execute("SELECT state, count(*) FROM jobs WHERE state IN " + sql_set(LIVE) + " GROUP BY state").fetchall())
    up = store.one("SELECT count(*) AS n FROM hosts WHERE state = 'up'")["n"]
    used = gpus_in_use(store)
    detected = {r["name"]: r["gpus_detected"] for r in store.query("SELECT name, gpus_detected FROM hosts")}
    return Overview(
        holder=lease["holder"] if live else None,
        last_cycle_at=lease["last_cycle_at"] if lease else None,
        hosts_up=up, hosts=len(inventory.hosts),
        gpus_used=sum(len(used.get(h.name, {})) for h in inventory.hosts),
        gpus=sum(rules.host_gpus(h.gpus, detected.get(h.name)) or 0 for h in inventory.hosts),
        running=counts.get("RUNNING", 0) + counts.get("STARTING", 0), pending=counts.get("PENDING", 0),
    )


# --- cluster -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    hosts: dict[str, tuple]  # name -> (name, state, (used, total), cpu, mem, jobs)
    gpus: dict[tuple[str, int], tuple]  # (host, index) -> (index, name, util, (used, total), ts, temp, power, job)
    samples: dict[tuple[str, int], float] = field(default_factory=dict)  # (host, gpu) -> util of this poll


def cluster(store: Store, inventory: Inventory) -> Cluster:
    rows = {r["name"]: r for r in store.query("SELECT name, state, draining, reason, gpus_detected FROM hosts")}
    used = gpus_in_use(store)
    hosts, gpus, samples = {}, {}, {}
    # SQLite's json_extract (C) instead of json.loads per sample: 2,048 GPUs in a few ms
    host_stats = {h: (cpu, mem) for h, cpu, mem in _plain(store).execute(
        "SELECT host, json_extract(sample, '$.cpu_percent'), json_extract(sample, '$.mem_percent')"
        " FROM latest WHERE gpu = -1")}
    for host, g, name, util, mem_used, mem_total, temp, power, procs in _plain(store).execute(
        "SELECT host, gpu, json_extract(sample, '$.name'), json_extract(sample, '$.util'),"
        " json_extract(sample, '$.mem_used'), json_extract(sample, '$.mem_total'), json_extract(sample, '$.temp'),"
        " json_extract(sample, '$.power'), json_extract(sample, '$.processes') FROM latest WHERE gpu >= 0"
    ):
        job = used.get(host, {}).get(g)
        if job is None and procs and procs != "[]":  # a job's rank that telemetry saw but no live attempt owns
            job = next((p.get("job") for p in json.loads(procs) if p.get("job") is not None), None)
        gpus[(host, g)] = (g, name or "", util, (mem_used, mem_total), temp, power, job)
        samples[(host, g)] = util
    for h in inventory.hosts:
        r = rows.get(h.name) or {}
        cpu, mem = host_stats.get(h.name, (None, None))
        st = rules.host_state(r.get("state"), r.get("draining"))
        total = rules.host_gpus(h.gpus, r.get("gpus_detected"))
        jobs = sorted(set(used.get(h.name, {}).values()))
        hosts[h.name] = (h.name, st, (len(used.get(h.name, {})), total), cpu, mem, " ".join(map(str, jobs)))
    return Cluster(hosts, gpus, samples)


def _plain(store: Store):
    """A cursor yielding plain tuples: sqlite3.Row costs more than the query on big reads."""
    cur = store.conn.cursor()
    cur.row_factory = None
    return cur


def gpu_history(store: Store, host: str, since: float) -> dict[int, list[float]]:
    """Recent utilisation of one host's GPUs, oldest first, to seed the sparklines."""
    out: dict[int, list[float]] = {}
    for g, util in store.conn.execute(
        "SELECT gpu, util FROM samples WHERE ts >= ? AND host = ? AND gpu >= 0 ORDER BY ts LIMIT 20000", (since, host)
    ):
        out.setdefault(g, []).append(util)
    return out


# --- queue -------------------------------------------------------------------------------------

SKEW = 60.0  # ended_at is stamped before commit: re-read a minute back so no late commit is missed
# (id, name, state, (nodes, gpus), submitted_at, step, loss, tokens/s, reason), the metrics fields
# picked by SQLite's json_extract rather than json.loads per row
JOB_SELECT = ("SELECT id, name, state, nodes, gpus_per_node, submitted_at, json_extract(metrics, '$.step'),"
              " json_extract(metrics, '$.loss'), json_extract(metrics, '$.tokens_per_s'), reason FROM jobs")


def queue(store: Store, since: float | None) -> tuple[dict[int, tuple], float]:
    """All jobs when `since` is None; else only those that can have changed: live ones and those that
    ended since then (finished jobs never change again). Returns the rows and the next `since`."""
    mark = store.one("SELECT max(coalesce(ended_at, 0)) AS t FROM jobs")["t"] or 0.0
    if since is None:
        cur = _plain(store).execute(JOB_SELECT)
    else:
        cur = _plain(store).execute(f"{JOB_SELECT} WHERE state IN {sql_set(LIVE)} OR ended_at >= ?", (since - SKEW,))
    return {r[0]: (r[0], r[1], r[2], (r[3], r[4]), *r[5:]) for r in cur}, mark


# --- job ---------------------------------------------------------------------------------------


@dataclass
class JobDetail:
    job: Job
    attempts: list[Attempt]
    nodes: list[Node]  # of the current attempt


def job_detail(store: Store, job_id: int) -> JobDetail | None:
    try:
        job = jobs.get(store, job_id)
    except NotFound:
        return None
    return JobDetail(job, jobs.attempts(store, job_id), jobs.nodes(store, job_id, job.attempt))


# --- datasets ----------------------------------------------------------------------------------


@dataclass
class Datasets:
    versions: dict[str, tuple]  # "name@version" -> (ref, shards, tokens, vocab, created_at, placed)
    placements: dict[str, dict[str, tuple]]  # ref -> host -> (host, state, detail, updated_at)


def datasets(store: Store, inventory: Inventory) -> Datasets:
    placements: dict[str, dict[str, tuple]] = {}
    for r in store.conn.execute("SELECT name, version, host, state, detail, updated_at FROM data_placements"):
        placements.setdefault(f"{r[0]}@{r[1]}", {})[r[2]] = (r[2], r[3], r[4] or "", r[5])
    versions = {}
    for r in store.conn.execute("SELECT name, version, shards, tokens, vocab_size, created_at FROM datasets"):
        ref = f"{r[0]}@{r[1]}"
        ok = sum(1 for p in placements.get(ref, {}).values() if p[1] == "verified")
        versions[ref] = (ref, r[2], r[3], r[4], r[5], f"{ok}/{len(inventory.hosts)}")
        for h in inventory.hosts:  # hosts never synced show as absent rather than missing
            placements.setdefault(ref, {}).setdefault(h.name, (h.name, "absent", "", None))
    return Datasets(versions, placements)


# --- events ------------------------------------------------------------------------------------


def events(store: Store, after: int, limit: int = 20_000) -> dict[int, tuple]:
    """Events newer than id `after` (the newest `limit` on the first read): id -> (id, ts, actor, object, what, reason)."""
    cur = store.conn.execute(
        "SELECT id, ts, actor, object, what, reason FROM events WHERE id > ? ORDER BY id DESC LIMIT ?", (after, limit)
    )
    return {r[0]: tuple(r) for r in cur}

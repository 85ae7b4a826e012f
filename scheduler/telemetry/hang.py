"""Hang and waste detection over the present (`latest`) and the job's progress stamps.

A job is hung when nothing it writes has advanced for `hang_after` seconds (no log line, no metrics
line: the loop stamps `progress_at` / `metrics_at`) AND the hardware agrees that it is not working:
its GPUs sit idle, or they are pinned at ~100 % utilisation while drawing little power — the
signature of a kernel spinning on a collective that will never complete (the stuck NCCL all-reduce).
A CPU-only job (gloo) that waits in a collective burns no CPU, so there its ranks' CPU is the
evidence. Slow-but-busy jobs (long evaluation, a slow checkpoint) are not flagged.

"For `hang_after` seconds" is measured up to the last time the loop looked at every node of the job
(job_nodes.last_seen), not up to the wall clock: the stamps only move when a probe answers, so a loop
that could not look (a slow cycle, a probe that timed out on a loaded host) has no news, which is not
evidence of a stall. Flags describe a running job: the first check after a job stopped running
(ended, or back in the queue for a retry) clears them.

Waste: GPUs allocated to a running job that have been idle for `hang_after`, even if it progresses.

`detect_hang` / `detect_idle` are pure; `check_hangs` applies them to the store (flags + events).
A job may ask for an automatic action with `--env HEADNODE_ON_HANG=cancel`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .. import jobs
from ..model import Job, JobState, Node
from ..store import Store, dumps, loads

IDLE_UTIL = 5.0  # percent
PINNED_UTIL = 95.0  # percent
LOW_POWER = 0.4  # of the power limit: busy kernels draw far more
IDLE_CPU = 5.0  # percent of one core per rank: a rank blocked in a collective sleeps
HANG, IDLE = "hang", "idle-gpus"
ON_HANG = "HEADNODE_ON_HANG"


@dataclass(frozen=True)
class Flag:
    kind: str
    reason: str


def last_progress(job: Job) -> float | None:
    """The newest sign of life: the log or metrics advancing, else the start."""
    stamps = (job.progress_at, job.metrics_at, job.started_at)
    return max((s for s in stamps if s is not None), default=None)


def last_looked(nodes: list[Node]) -> float | None:
    """When the loop last saw every one of the nodes (their log and metrics sizes): the oldest of their
    last_seen; None when one was never seen."""
    seen = [n.last_seen for n in nodes]
    return min(seen) if seen and None not in seen else None


def detect_hang(last: float | None, gpus: list[dict], ranks: list[dict], seen: float | None, hang_after: float) -> Flag | None:
    """last: the job's last_progress; seen: when its nodes were last looked at (last_looked), the end
    of the span without progress; gpus: the latest samples of the job's GPUs; ranks: [{host, pids,
    cpu_percent}] of its processes. No evidence (not looked at, no fresh telemetry) is no verdict: a
    silent host is NODE_LOST's business."""
    if last is None or seen is None or seen - last < hang_after:
        return None
    stalled = f"no progress for {seen - last:.0f} s"
    if gpus:
        if all(g.get("util") is not None and g["util"] < IDLE_UTIL for g in gpus):
            return Flag(HANG, f"{stalled} and its {len(gpus)} GPUs idle")
        if all(_spinning(g) for g in gpus):
            return Flag(HANG, f"{stalled} with its GPUs pinned at 100 % utilisation on low power (a communication hang)")
        return None
    if ranks:
        pids = sum(len(r["pids"]) for r in ranks)
        cpu = sum(r["cpu_percent"] for r in ranks)
        if pids and cpu < IDLE_CPU * pids:
            return Flag(HANG, f"{stalled} and its {pids} processes idle ({cpu:.0f} % CPU)")
    return None


def _spinning(g: dict) -> bool:
    util, power, limit = g.get("util"), g.get("power"), g.get("power_limit")
    return None not in (util, power, limit) and util >= PINNED_UTIL and power < LOW_POWER * limit


def detect_idle(gpus: list[dict], now: float, hang_after: float) -> Flag | None:
    idle = [g for g in gpus if g.get("idle_since") is not None and now - g["idle_since"] >= hang_after]
    if not idle:
        return None
    since = now - max(g["idle_since"] for g in idle)
    return Flag(IDLE, f"{len(idle)} of its {len(gpus)} GPUs idle for {since:.0f} s")


def job_evidence(store: Store, job: Job, nodes: list[Node], fresh_after: float) -> tuple[list[dict], list[dict]]:
    """(its GPUs' latest samples, its ranks per host) for the job's nodes (its current attempt), fresh only."""
    if not nodes:
        return [], []
    wanted = {(n.host, g) for n in nodes for g in n.gpus} | {(n.host, -1) for n in nodes}
    marks = ",".join("?" * len(nodes))
    gpus, ranks = [], []
    for r in store.query(f"SELECT host, gpu, ts, sample FROM latest WHERE host IN ({marks})", [n.host for n in nodes]):
        if (r["host"], r["gpu"]) not in wanted or r["ts"] < fresh_after:
            continue
        sample = loads(r["sample"])
        if r["gpu"] >= 0:
            gpus.append(sample)
        elif str(job.id) in sample.get("jobs", {}):
            ranks.append({"host": r["host"], **sample["jobs"][str(job.id)]})
    return gpus, ranks


def check_hangs(store: Store, settings, now: float | None = None) -> list[tuple[int, Flag]]:
    """Flag running jobs (jobs.flags + an `alert` event when a flag appears or clears), and clear the
    flags of jobs that stopped running; returns the new flags. Idempotent, so any process may call it
    every cycle."""
    now = time.time() if now is None else now
    raised = []
    rows = store.query("SELECT * FROM jobs WHERE state = ? OR flags != ? ORDER BY id", (JobState.RUNNING, dumps([])))
    for job in map(Job.of, rows):
        found: dict[str, Flag] = {}
        if job.state == JobState.RUNNING:
            nodes = jobs.nodes(store, job.id, job.attempt)
            gpus, ranks = job_evidence(store, job, nodes, now - settings.down_after)
            seen = last_looked(nodes)
            findings = (
                detect_hang(last_progress(job), gpus, ranks, None if seen is None else min(seen, now), settings.hang_after),
                detect_idle(gpus, now, settings.hang_after),
            )
            found = {f.kind: f for f in findings if f}
        before = list(job.flags)
        after = [f for f in before if f not in (HANG, IDLE)] + sorted(found)
        if after == before:
            continue
        obj = f"job:{job.id}"
        with store.tx():
            # Only onto the job as it was read: one that ended or retried meanwhile is looked at anew.
            cur = store.execute(
                "UPDATE jobs SET flags = ? WHERE id = ? AND state = ? AND attempt = ?",
                (dumps(after), job.id, job.state, job.attempt),
            )
            if not cur.rowcount:
                continue
            for kind in sorted(found.keys() - set(before)):
                store.event(obj, "alert", f"{kind}: {found[kind].reason}")
                raised.append((job.id, found[kind]))
            for kind in sorted({HANG, IDLE} & set(before) - found.keys()):
                store.event(obj, "alert cleared", kind)
        if HANG in found and HANG not in before and job.env.get(ON_HANG) == "cancel" and not job.cancel_requested:
            from .. import lifecycle

            lifecycle.request_cancel(store, job.id, actor=f"telemetry ({ON_HANG}=cancel)")
    return raised

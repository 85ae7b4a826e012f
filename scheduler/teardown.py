"""Verified teardown: stop every process of a job on its hosts, and prove that none is left.

torchrun gives each worker a session of its own, so signalling the node's process group is not
enough (FIELD-NOTES): the job's processes are found by the marker in their environment
(HEADNODE_JOB_ID, HEADNODE_HOST and HEADNODE_RUN_DIR, see launch.py: the run dir keeps another
headnode's job of the same id on the same machine safe), with everything in their process groups.
One round trip per host runs remote/kill.py: SIGTERM, a grace period, SIGKILL, then a final scan, and
where NVML answers, a check that no GPU still lists one of those processes.

`end_attempt` is the one place an attempt ends (the loop's reconcile and `cancel_now` both use it):
it tears down first and records the new state only once the hosts have confirmed it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import launch, lease
from .execute import Executor, Result
from .inventory import Host, Inventory
from .remote import source
from .store import Store

KILL_WAIT = 5.0  # after SIGKILL: a process in uninterruptible sleep (a hung driver) may take a while

KILL = source("kill.py")


@dataclass(frozen=True)
class HostReport:
    host: str
    found: int = 0  # processes of the job seen on the host
    killed: int = 0  # of those, how many needed SIGKILL
    left: tuple[str, ...] = ()  # what still runs: "pid 123 (python -m trainer)", "GPU 0 still lists pid 123"
    error: str | None = None  # the host could not be asked

    @property
    def verified(self) -> bool:
        return self.error is None and not self.left


def teardown(executor: Executor, hosts: Sequence[Host], job_id: int, *, grace: float) -> list[HostReport]:
    """Stop job `job_id` on every host at once and report, per host, what is left."""
    results = executor.python_many(
        hosts,
        KILL,
        lambda h: [str(job_id), h.name, launch.run_dir(h, job_id), str(grace), str(KILL_WAIT)],
        timeout=grace + KILL_WAIT + 15,
    )
    return [_report(h.name, results[h.name]) for h in hosts]


def _report(host: str, r: Result) -> HostReport:
    if not r.ok:
        return HostReport(host, error=r.reason or "no answer")
    try:
        d = json.loads(r.stdout)
    except ValueError:
        return HostReport(host, error=f"unreadable answer {r.stdout[:80]!r}")
    left = [f"pid {pid} ({cmd})" for pid, cmd in d["left"]]
    left += [f"GPU {gpu} still lists pid {pid}" for gpu, pid in d["gpu"]]
    return HostReport(host, d["found"], d["killed"], tuple(left))


def verdict(reports: Sequence[HostReport], unreachable: Mapping[str, str] = {}) -> tuple[bool, str]:
    """(all verified, one sentence): which hosts are clean, which still hold what, which did not answer."""
    clean = [r.host for r in reports if r.verified]
    dirty = [f"{r.host} still runs {', '.join(r.left)}" for r in reports if r.left]
    silent = [f"{r.host} did not answer ({r.error})" for r in reports if r.error]
    silent += [f"{h} did not answer ({why})" for h, why in unreachable.items()]
    if not dirty and not silent:
        killed = sum(r.killed for r in reports)
        extra = f" ({killed} needed SIGKILL)" if killed else ""
        return True, f"verified: no process left on {', '.join(clean)}{extra}"
    parts = ["NOT verified: " + "; ".join(dirty + silent)]
    if clean:
        parts.append(f"no process left on {', '.join(clean)}")
    return False, "; ".join(parts)


# --- ending an attempt ------------------------------------------------------------------------------


def end_attempt(
    store: Store,
    executor: Executor,
    inventory: Inventory,
    job: dict,
    *,
    state: str,
    reason: str,
    unreachable: Mapping[str, str] = {},
    actor: str | None = None,
    reports: Sequence[HostReport] | None = None,
) -> bool:
    """Tear down the job's current attempt, then record `state` with `reason` (+ the verdict).

    state: SUCCEEDED, FAILED (requeued while retries are left), TIMEOUT, CANCELLED, or PENDING (requeue
    without charging a retry: the attempt never really ran). Hosts in `unreachable` {host: why} are not
    asked; their nodes become LOST and are swept when the host answers again. A CANCELLED job needs
    every host verified; any other end needs every host that answers verified. Until then the job
    keeps its state, its reason says what is left, and the caller tries again next cycle.
    `reports` that the caller already holds (the probe saw nothing left) replace the teardown.
    Returns whether the new state was recorded.
    """
    job_id, attempt = job["id"], job["attempt"]
    nodes = store.query("SELECT * FROM job_nodes WHERE job_id = ? AND attempt = ? ORDER BY node_rank", (job_id, attempt))
    known = {h.name: h for h in inventory.hosts}
    names = list(dict.fromkeys(n["host"] for n in nodes))
    unreachable = {**{h: "it is no longer in hosts.toml" for h in names if h not in known}, **unreachable}
    hosts = [known[h] for h in names if h not in unreachable]
    if reports is None:
        reports = teardown(executor, hosts, job_id, grace=inventory.settings.grace_period)
    verified, said = verdict(reports, unreachable)
    asked_clean = all(r.verified for r in reports)
    if not asked_clean or (state == "CANCELLED" and not verified):
        with store.tx():
            store.execute("UPDATE jobs SET reason = ? WHERE id = ?", (f"{reason}; stopping: {said}", job_id))
        return False

    now = time.time()
    obj = f"job:{job_id}"
    with store.tx():
        fresh = store.one("SELECT state, attempt, retries FROM jobs WHERE id = ?", (job_id,))
        if fresh is None or fresh["attempt"] != attempt or fresh["state"] not in ("STARTING", "RUNNING"):
            return False  # someone else ended it meanwhile (cancel_now racing a loop that took over)
        for n in nodes:
            lost = n["host"] in unreachable
            store.execute(
                "UPDATE job_nodes SET state = ? WHERE job_id = ? AND attempt = ? AND node_rank = ?",
                ("LOST" if lost else "EXITED", job_id, attempt, n["node_rank"]),
            )
        attempt_state = "ABORTED" if state == "PENDING" else state  # ABORTED: not charged as a retry
        store.execute(
            "UPDATE attempts SET state = ?, reason = ?, ended_at = ? WHERE job_id = ? AND attempt = ?",
            (attempt_state, reason, now, job_id, attempt),
        )
        failures = store.one(
            "SELECT count(*) AS n FROM attempts WHERE job_id = ? AND state = 'FAILED'", (job_id,)
        )["n"]
        if state == "PENDING" or (state == "FAILED" and failures <= fresh["retries"]):
            new_state = "PENDING"
            nxt = f"retrying as attempt {attempt + 1}" + (
                f" ({failures} of {fresh['retries']} retries used)" if state == "FAILED" else ""
            )
            text = f"attempt {attempt} ended: {reason}; {said}; {nxt}"
            store.execute("UPDATE jobs SET state = 'PENDING', reason = ? WHERE id = ?", (text, job_id))
        else:
            new_state, text = state, f"{reason}; {said}"
            store.execute(
                "UPDATE jobs SET state = ?, reason = ?, ended_at = ? WHERE id = ?", (state, text, now, job_id)
            )
        store.event(obj, new_state, text, actor=actor)
    return True


def sweep_lost(store: Store, executor: Executor, inventory: Inventory, host: Host) -> list[str]:
    """Stop what is left of LOST nodes on a host that answers again; returns one line per job swept."""
    rows = store.query("SELECT DISTINCT job_id FROM job_nodes WHERE host = ? AND state = 'LOST'", (host.name,))
    done = []
    for row in rows:
        (report,) = teardown(executor, [host], row["job_id"], grace=inventory.settings.grace_period)
        if not report.verified:
            continue
        text = f"{host.name} answers again; verified: no process left there (stopped {report.found})"
        with store.tx():
            store.execute(
                "UPDATE job_nodes SET state = 'EXITED' WHERE job_id = ? AND host = ? AND state = 'LOST'",
                (row["job_id"], host.name),
            )
            store.event(f"job:{row['job_id']}", "swept", text)
        done.append(f"job {row['job_id']}: {text}")
    return done


# --- cancelling without a loop ----------------------------------------------------------------------


def cancel_now(store: Store, executor: Executor, inventory: Inventory, job_id: int, actor: str) -> dict | None:
    """Cancel a STARTING/RUNNING job here and now, verified, when no scheduler loop runs.

    Holds the scheduler lease meanwhile so no loop starts acting on the job at the same time. Returns
    {id, state, reason, verified}; None if a loop holds the lease (it will act on the recorded intent:
    wait for the job instead).
    """
    holder = f"{lease.holder_id()}/cancel"
    try:
        lease.acquire(store, holder, "cancel", inventory.settings.grace_period + KILL_WAIT + 60)
    except lease.LeaseHeld:
        return None
    try:
        with store.tx():
            job = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
            if job is not None and job["state"] in ("STARTING", "RUNNING") and not job["cancel_requested"]:
                store.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
                store.event(f"job:{job_id}", "cancel requested", "", actor=actor)
        if job is not None and job["state"] in ("STARTING", "RUNNING"):
            end_attempt(store, executor, inventory, job, state="CANCELLED", reason=f"cancelled by {actor}", actor=actor)
        job = store.one("SELECT id, state, reason FROM jobs WHERE id = ?", (job_id,))
        return {**job, "verified": job["state"] == "CANCELLED"} if job else None
    finally:
        lease.release(store, holder)


def cancel_actor(store: Store, job_id: int) -> str:
    """Who asked for the cancel (the newest 'cancel requested' event), for the final reason."""
    row = store.one(
        "SELECT actor FROM events WHERE object = ? AND what = 'cancel requested' ORDER BY id DESC LIMIT 1",
        (f"job:{job_id}",),
    )
    return row["actor"] if row else "a user"


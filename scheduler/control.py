"""Acting on jobs across their hosts: end an attempt (tear down, then record), sweep LOST nodes,
cancel with a verified outcome, wait. The CLI, the console, the demo and the loop all use these.

`finish` is the one path by which an attempt ends: teardown.teardown stops the processes and reports
per host, lifecycle.end_attempt records the outcome only if that report allows it.

`cancel` works with or without a scheduler loop: it records the intent; a loop holding the lease acts
on it; when none does (or it dies meanwhile), the teardown runs from here, under the lease, so no
loop starts acting on the same job at once. Its answer is a CancelOutcome per job, not text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from . import jobs, lease, lifecycle, teardown
from .inventory import Host, Inventory
from .model import TERMINAL, AttemptState, Ending, HostReport, Job, JobState, Verdict
from .store import Store

CANCEL_TIMEOUT = 60.0
_POLL = 0.2
_PROGRESS_EVERY = 5.0


def finish(store: Store, executor, inventory: Inventory, job: Job, ending: Ending,
           *, reports: Sequence[HostReport] | None = None) -> tuple[JobState, str] | None:  # fmt: skip
    """Tear down the job's current attempt, then record `ending` (lifecycle.end_attempt).

    Hosts in `ending.unreachable` {host: why} are not asked, nor hosts no longer in hosts.toml.
    `reports` the caller already holds (the probe saw nothing left) replace the teardown. Returns the
    new (state, reason), or None when the verdict does not allow recording yet (retried later).
    """
    nodes = jobs.nodes(store, job.id, job.attempt)
    known = {h.name: h for h in inventory.hosts}
    names = list(dict.fromkeys(n.host for n in nodes))
    unreachable = {**{h: "it is no longer in hosts.toml" for h in names if h not in known}, **ending.unreachable}
    unreachable = {h: why for h, why in unreachable.items() if h in names}
    hosts = [known[h] for h in names if h not in unreachable]
    if reports is None:
        reports = teardown.teardown(executor, hosts, job.id, grace=inventory.settings.grace_period,
                                    run_dirs=_run_dirs(store, job.id, hosts), attempts=[job.attempt])
    return lifecycle.end_attempt(store, job, replace(ending, unreachable=unreachable), Verdict.of(reports, unreachable))


def _run_dirs(store: Store, job_id: int, hosts: Sequence[Host]) -> dict[str, str]:
    """Where the job's processes run on each host: as recorded at launch, else where launch puts them."""
    from . import launch

    recorded = jobs.run_dirs(store, job_id)
    return {h.name: recorded.get(h.name) or launch.run_dir(h, job_id, store.id) for h in hosts}


def sweep_lost(store: Store, executor, inventory: Inventory, host: Host) -> list[str]:
    """Stop what is left of LOST nodes on a host that answers again; returns one line per job swept.
    A job whose current attempt has a node on the host waits until that attempt is over (its own
    teardown stops what the lost one left there too)."""
    rows = store.query(
        "SELECT job_id, group_concat(DISTINCT attempt) AS attempts FROM job_nodes WHERE host = ? AND state = 'LOST' GROUP BY job_id",
        (host.name,),
    )
    done = []
    for row in rows:
        job = jobs.get(store, row["job_id"])
        if job.active and any(n.host == host.name for n in jobs.nodes(store, job.id, job.attempt)):
            continue  # its retry runs here too, and a teardown stops every process of the job: sweep after it
        attempts = [int(a) for a in row["attempts"].split(",")]
        (report,) = teardown.teardown(executor, [host], row["job_id"], grace=inventory.settings.grace_period,
                                      run_dirs=_run_dirs(store, row["job_id"], [host]), attempts=attempts)
        if not report.verified:
            continue
        text = f"{host.name} answers again; verified: no process left there (stopped {report.found})"
        lifecycle.node_swept(store, row["job_id"], host.name, text)
        done.append(f"job {row['job_id']}: {text}")
    return done


# --- cancel -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelOutcome:
    job_id: int
    was: JobState  # when the cancel was asked
    state: JobState  # now: CANCELLED, another final state if the job ended first, or still active
    reason: str
    verdict: Verdict | None  # what the last teardown found (None: nothing ever ran)
    stopped_here: bool = False  # the teardown ran in this process (no loop held the lease)
    timeout: float | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    @property
    def verified(self) -> bool:
        """CANCELLED, and every host was asked and holds nothing of the job."""
        return self.state == JobState.CANCELLED and (self.verdict is None or self.verdict.verified)

    @property
    def left(self) -> tuple[HostReport, ...]:
        """Per host what is still there, or why it did not answer (empty when verified)."""
        return self.verdict.dirty if self.verdict else ()

    def sentence(self) -> str:
        j = self.job_id
        if self.was in TERMINAL:
            return f"job {j} had already ended: {self.state}, {self.reason}"
        if self.state == JobState.CANCELLED:
            if self.verdict is None:
                return f"job {j} cancelled before it started"
            if self.was == JobState.PENDING:  # between attempts: the verdict is the last attempt's
                return f"job {j} cancelled while waiting to retry; its last attempt: {self.verdict.sentence()}"
            return f"job {j} cancelled; {self.verdict.sentence()}"
        if self.done:
            return f"job {j} ended {self.state} before the cancel took effect: {self.reason}"
        after = f" after {self.timeout:g} s" if self.timeout is not None else ""
        return (
            f"job {j} is not verified stopped{after}: still {self.state}, {self.reason}; run `headnode show {j}`"
            f" for each node, then `headnode cancel {j}` again"
        )


def _outcome(store: Store, job_id: int, was: JobState, *, here: bool, timeout: float | None) -> CancelOutcome:
    job = jobs.get(store, job_id)
    attempt = jobs.attempt(store, job_id, job.attempt) if job.attempt else None
    return CancelOutcome(job_id, was, job.state, job.reason, attempt.verdict if attempt else None, here, timeout)


def cancel_here(store: Store, executor, inventory: Inventory, job_id: int, actor: str) -> bool:
    """Cancel a STARTING/RUNNING job from this process, verified, when no scheduler loop runs.

    Holds the scheduler lease meanwhile, so no loop starts acting on the job at the same time.
    Returns False if a loop holds the lease (it acts on the recorded intent: wait for it instead).
    """
    holder, ttl = f"{lease.holder_id()}/cancel", inventory.settings.lease_ttl
    try:
        lease.acquire(store, holder, "cancel", ttl)
    except lease.LeaseHeld:
        return False
    try:
        with lease.Keeper(store.path, holder, ttl):  # the teardown may take longer than the ttl
            lifecycle.request_cancel(store, job_id, actor=actor)
            job = jobs.get(store, job_id)
            if job.active:
                finish(store, executor, inventory, job, Ending(AttemptState.CANCELLED, f"cancelled by {actor}", actor=actor))
        return True
    finally:
        lease.release(store, holder)


def cancel(
    store: Store,
    inventory: Inventory,
    job_ids: Sequence[int],
    *,
    actor: str | None = None,
    timeout: float = CANCEL_TIMEOUT,
    executor=None,
    progress: Callable[[float, list[int]], None] | None = None,
    on_here: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[CancelOutcome]:
    """Cancel every job and wait until each is verified stopped (or `timeout` passes, or
    `should_stop()`); one CancelOutcome per job, in order. `progress(elapsed, pending)` is called every
    few seconds while waiting; `on_here(job_id)` when the teardown starts from this process."""
    actor = actor or store.actor
    ids = list(dict.fromkeys(job_ids))
    was = {i: jobs.get(store, i).state for i in ids}  # every lookup first: an unknown id cancels nothing
    for i in ids:
        lifecycle.request_cancel(store, i, actor=actor)
    own = None
    here: set[int] = set()
    started = time.monotonic()
    next_note = started + _PROGRESS_EVERY
    pending = [i for i in ids if not jobs.get(store, i).terminal]
    try:
        while pending:
            for i in list(pending):
                job = jobs.get(store, i)
                if job.terminal:
                    pending.remove(i)
                elif job.state == JobState.PENDING:  # requeued for a retry meanwhile: nothing runs, end it here
                    lifecycle.request_cancel(store, i, actor=actor)
                elif lease.active(store) is None:
                    if i not in here and on_here is not None:
                        on_here(i)
                    here.add(i)
                    if executor is None:
                        from .execute import Executor

                        executor = own = Executor(inventory)
                    cancel_here(store, executor, inventory, i, actor)
            now = time.monotonic()
            if not pending or now - started >= timeout or (should_stop is not None and should_stop()):
                break
            if progress is not None and now >= next_note:
                progress(now - started, list(pending))
                next_note = now + _PROGRESS_EVERY
            time.sleep(_POLL)
    finally:
        if own is not None:
            own.close()
    return [_outcome(store, i, was[i], here=i in here, timeout=timeout) for i in ids]



def wait(
    store: Store,
    job_id: int,
    *,
    timeout: float | None = None,
    poll: float = 0.5,
    should_stop: Callable[[], bool] | None = None,
    on_poll: Callable[[Job], None] | None = None,
) -> Job:
    """Block until the job is in a final state; returns it (still live if timed out or stopped).
    `on_poll(job)` sees every read, for callers that report progress meanwhile."""
    deadline = float("inf") if timeout is None else time.monotonic() + timeout
    while True:
        job = jobs.get(store, job_id)
        if on_poll is not None:
            on_poll(job)
        left = deadline - time.monotonic()
        if job.terminal or left <= 0 or (should_stop is not None and should_stop()):
            return job
        time.sleep(min(poll, left))

"""Who owns what: GPU processes and CPU ranks mapped to jobs.

The sampler reads each process's job marker (HEADNODE_JOB_ID in its environment) on the host; here
the marks meet the store. A GPU process without a marker is "foreign" (someone ran it by hand, or
another scheduler did); one whose job is no longer starting or running is "stale" (a leftover that a
cancel or a crash did not reach) — both hold GPU memory the scheduler thinks is free.
"""

from __future__ import annotations

from ..store import Store

FOREIGN, STALE = "foreign", "stale"


def live_jobs(store: Store) -> set[str]:
    return {str(r["id"]) for r in store.query("SELECT id FROM jobs WHERE state IN ('STARTING', 'RUNNING')")}


def process_flag(job: str | None, live: set[str] | None) -> str | None:
    """None for a process of a live job; `live` None means the store was not consulted."""
    if job is None:
        return FOREIGN
    if live is not None and job not in live:
        return STALE
    return None


def attribute(gpu: dict, live: set[str] | None) -> dict:
    """The GPU with each process flagged, and `jobs`: the jobs running on it."""
    procs = [{**p, "flag": process_flag(p.get("job"), live)} for p in gpu.get("processes") or []]
    jobs = sorted({p["job"] for p in procs if p["job"] is not None and p["flag"] is None})
    return {**gpu, "processes": procs if gpu.get("processes") is not None else None, "jobs": jobs}

"""Verified teardown: stop every process of a job on its hosts, and report what is left.

torchrun gives each worker a session of its own, so signalling the node's process group is not
enough (FIELD-NOTES): the job's processes are found by the marker in their environment
(HEADNODE_JOB_ID, HEADNODE_HOST and HEADNODE_RUN_DIR, see launch.py: the run dir keeps another
headnode's job of the same id on the same machine safe), with everything in their process groups.
One round trip per host runs remote/kill.py: SIGTERM, a grace period, SIGKILL, then a final scan, and
where NVML answers, a check that no GPU still lists one of those processes.

This module only stops processes and reports what it found (model.HostReport per host); it writes
nothing. control.finish tears down first and then has lifecycle.end_attempt record the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from .execute import Executor, Result
from .inventory import Host
from .model import HostReport
from .remote import source

KILL_WAIT = 5.0  # after SIGKILL: a process in uninterruptible sleep (a hung driver) may take a while

KILL = source("kill.py")


def teardown(executor: Executor, hosts: Sequence[Host], job_id: int, *, grace: float,
             run_dirs: Mapping[str, str], attempts: Sequence[int] = ()) -> list[HostReport]:  # fmt: skip
    """Stop job `job_id` on every host at once and report, per host, what is left. `run_dirs`: the
    job's run dir on each host, as recorded at launch (jobs.run_dirs). `attempts` are the attempts
    this ends: a start of one of them that reaches a host only later runs nothing (kill.py)."""
    fenced = [",".join(map(str, attempts))] if attempts else []
    results = executor.python_many(
        hosts,
        KILL,
        lambda h: [str(job_id), h.name, run_dirs[h.name], str(grace), str(KILL_WAIT), *fenced],
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

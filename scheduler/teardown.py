"""Verified teardown: stop every process of a job on its hosts, and report what is left.

torchrun gives each worker a session of its own, so signalling the node's process group is not
enough (FIELD-NOTES): the job's processes are found by the marker in their environment
(HEADNODE_JOB_ID, HEADNODE_HOST and HEADNODE_RUN_DIR, see launch.py: the run dir keeps another
headnode's job of the same id on the same machine safe), with everything in their process groups.
One round trip per host runs KILL below: SIGTERM, a grace period, SIGKILL, then a final scan, and
where NVML answers, a check that no GPU still lists one of those processes.

This module only stops processes and reports what it found (model.HostReport per host); it writes
nothing. control.finish tears down first and then has lifecycle.end_attempt record the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from . import launch
from .execute import Executor, Result
from .inventory import Host
from .model import HostReport

KILL_WAIT = 5.0  # after SIGKILL: a process in uninterruptible sleep (a hung driver) may take a while

KILL = r"""
import json, os, signal, sys, time
job, host, run_dir, grace, kill_wait = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
want = {f"HEADNODE_JOB_ID={job}".encode(), f"HEADNODE_HOST={host}".encode()}
run_dir = os.path.realpath(run_dir)
me = os.getpid()

def ours(env):
    # The run dir tells this store's job 3 from another headnode's job 3 on the same machine.
    if not want <= env:
        return False
    for item in env:
        if item.startswith(b"HEADNODE_RUN_DIR="):
            return os.path.realpath(item[17:].decode(errors="replace")) == run_dir
    return False

def scan():
    # {pid: cmdline} of the marked processes and every live process in their process groups.
    groups, marked = {}, set()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
        except OSError:
            continue
        if fields[0] == b"Z":
            continue  # exited, only waiting to be reaped: holds no GPU, no port
        pgid = int(fields[2])
        groups.setdefault(pgid, {})[int(p)] = cmd
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if ours(set(f.read().split(b"\0"))):
                    marked.add((int(p), pgid))
        except OSError:
            pass
    found = {}
    for pid, pgid in marked:
        found.update(groups[pgid])
    return found

def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

seen = scan()
ever = dict(seen)
send(seen, signal.SIGTERM)
deadline = time.monotonic() + grace
left = seen
while left and time.monotonic() < deadline:
    time.sleep(0.05)
    left = scan()
    send(set(left) - set(ever), signal.SIGTERM)  # started meanwhile (a worker mid-spawn)
    ever.update(left)
killed = set()
deadline = time.monotonic() + kill_wait
while left and time.monotonic() < deadline:
    send(left, signal.SIGKILL)
    killed.update(left)
    time.sleep(0.1)
    left = scan()
    ever.update(left)

gpu = []
try:
    import pynvml
    pynvml.nvmlInit()
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
            if proc.pid in ever:
                gpu.append([i, proc.pid])
except Exception:
    pass  # no NVML, no driver, or a board without the query: /proc is the whole answer
print(json.dumps({"found": len(ever), "killed": len(killed), "left": sorted(left.items()), "gpu": gpu}))
"""


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

"""Stops every process of a job on this host, and proves that none is left.

    python kill.py JOB HOST RUN_DIR GRACE KILL_WAIT [ATTEMPTS]

A process is the job's when its environment holds HEADNODE_JOB_ID=JOB, HEADNODE_HOST=HOST and a
HEADNODE_RUN_DIR that resolves to RUN_DIR (which tells this store's job 3 from another headnode's
job 3 on the same machine); everything in those processes' groups goes with them. SIGTERM to all,
then up to GRACE seconds for them to go (a process appearing meanwhile, a worker mid-spawn, gets its
SIGTERM too), then SIGKILL, repeated for up to KILL_WAIT seconds (a process in uninterruptible sleep
may take a while), then a final scan; where NVML answers, every GPU's process list is checked for
the pids seen. ATTEMPTS (comma-separated) are the attempts that end with this teardown: before the
first scan each gets RUN_DIR/attempt-N/ended, so a start of one of them still on its way here (its loop
died mid-start and the next one found no trace of it) runs nothing: wrap.sh looks for that file only once
it carries the markers, so either it sees the file or the scan sees it. Prints one JSON line:
{"found": N, "killed": N needing SIGKILL, "left": [[pid, cmdline], ...], "gpu": [[gpu, pid], ...]}.
"""

import json
import os
import signal
import sys
import time


def ours(env: set, want: set, run_dir: str) -> bool:
    if not want <= env:
        return False
    for item in env:
        if item.startswith(b"HEADNODE_RUN_DIR="):
            return os.path.realpath(item[17:].decode(errors="replace")) == run_dir
    return False


def scan(want: set, run_dir: str) -> dict:
    """{pid: cmdline} of the marked processes and every live process in their process groups."""
    me = os.getpid()
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
                if ours(set(f.read().split(b"\0")), want, run_dir):
                    marked.add((int(p), pgid))
        except OSError:
            pass
    found = {}
    for _pid, pgid in marked:
        found.update(groups[pgid])
    return found


def send(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def gpu_holders(pids) -> list:
    """[[gpu, pid]] for the pids that a GPU still lists; [] without NVML."""
    out = []
    try:
        import pynvml

        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if proc.pid in pids:
                    out.append([i, proc.pid])
    except Exception:
        pass  # no NVML, no driver, or a board without the query: /proc is the whole answer
    return out


ENDED = "ended"  # wrap.sh reads the same name


def fence(run_dir: str, attempts) -> None:
    for a in attempts:
        try:
            os.makedirs(os.path.join(run_dir, f"attempt-{a}"), exist_ok=True)
            open(os.path.join(run_dir, f"attempt-{a}", ENDED), "a").close()
        except OSError:
            pass  # a run dir we may not write: the scans below still stop whatever runs


def kill(job: str, host: str, run_dir: str, grace: float, kill_wait: float, attempts=()) -> dict:
    want = {f"HEADNODE_JOB_ID={job}".encode(), f"HEADNODE_HOST={host}".encode()}
    run_dir = os.path.realpath(run_dir)
    fence(run_dir, attempts)
    seen = scan(want, run_dir)
    ever = dict(seen)
    send(seen, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = seen
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = scan(want, run_dir)
        send(set(left) - set(ever), signal.SIGTERM)  # started meanwhile (a worker mid-spawn)
        ever.update(left)
    killed = set()
    deadline = time.monotonic() + kill_wait
    while left and time.monotonic() < deadline:
        send(left, signal.SIGKILL)
        killed.update(left)
        time.sleep(0.1)
        left = scan(want, run_dir)
        ever.update(left)
    return {"found": len(ever), "killed": len(killed), "left": sorted(left.items()), "gpu": gpu_holders(ever)}


def main(argv=None) -> None:
    job, host, run_dir, grace, kill_wait, *rest = sys.argv[1:] if argv is None else argv
    attempts = [a for a in (rest[0] if rest else "").split(",") if a.isdigit()]
    print(json.dumps(kill(job, host, run_dir, float(grace), float(kill_wait), attempts)))


if __name__ == "__main__":
    main()

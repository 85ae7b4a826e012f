"""What the scheduler adds to `ssh + torchrun`, and how long a verified cancel takes.

    python benchmarks/launch.py [--repeat 3]        (as root: it builds the namespace test cluster)

On 2 sshd hosts in network namespaces (tests/cluster.py), with `headnode scheduler run` running as a
user would run it (default settings, telemetry on):

(a) submit -> SUCCEEDED of a 2-host x 2-process job doing a gloo all-reduce: from just before
    `headnode submit` (a fresh CLI process) until the store says SUCCEEDED (the job's processes
    verified gone on both hosts), against the same torchrun command started by hand over parallel
    OpenSSH, measured in the same run, interleaved. Goal: <= 1.10x the hand-started run.
(c) cancel -> verified: `headnode cancel` of the same gang while it runs (past its all-reduce), until
    the command returns; then the test checks /proc on both hosts itself.

The scheduling pass over 10,000 pending jobs (b) is benchmarks/schedule.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler import inventory, lease  # noqa: E402
from scheduler.store import Store  # noqa: E402
from tests.cluster import IFACE, Cluster  # noqa: E402

GOAL = 1.10
PY = sys.executable
HEADNODE = str(Path(PY).with_name("headnode"))
HAND_PORT = 29400  # below the scheduler's port range: the two never share a rendezvous port
RANK = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1)
dist.all_reduce(t)
print(f"rank {dist.get_rank()} sum {t.item():g}", flush=True)
if sys.argv[1] == "sleep":
    time.sleep(300)
dist.destroy_process_group()
os._exit(0)
"""


def torchrun(node_rank: int, endpoint: str, local: str, run_id: str) -> list[str]:
    return [
        "env", f"GLOO_SOCKET_IFNAME={IFACE}", "CUDA_VISIBLE_DEVICES=0,1",
        PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{endpoint}:{HAND_PORT}", "--rdzv-id", run_id,
        "--rdzv-conf", f"is_host={int(node_rank == 0)}", "--local-addr", local,
        "--no-python", PY, "-c", RANK, "ok",
    ]  # fmt: skip


def by_hand(cluster: Cluster, run_id: str) -> float:
    a, b = cluster.hosts[:2]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cluster.ssh_argv(h.name, torchrun(k, a.address, h.address, run_id)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for k, h in enumerate((a, b))
    ]
    codes = [p.wait(120) for p in procs]
    took = time.perf_counter() - t0
    if codes != [0, 0]:
        raise SystemExit(f"the hand-started torchrun failed: exit codes {codes}")
    return took


def headnode(*argv: str) -> str:
    r = subprocess.run([HEADNODE, *argv], capture_output=True, text=True, timeout=180)
    if r.returncode:
        raise SystemExit(f"headnode {' '.join(argv[:2])} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def submit(config: Path, mode: str) -> int:
    out = headnode("submit", "--json", "--config", str(config), "--nodes", "2", "--gpus-per-node", "2",
                   "--", PY, "-c", RANK, mode)  # fmt: skip
    return json.loads(out)["id"]


def wait_for(store: Store, job_id: int, test, timeout: float = 120.0, poll: float = 0.01) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if test(row):
            return row
        time.sleep(poll)
    raise SystemExit(f"job {job_id} is still {row['state']} ({row['reason']})")


def past_allreduce(store: Store, job_id: int) -> bool:
    nodes = store.query("SELECT * FROM job_nodes WHERE job_id = ? AND pid IS NOT NULL", (job_id,))
    logs = [Path(n["run_dir"]) / f"attempt-{n['attempt']}" / f"node-{n['node_rank']}.log" for n in nodes]
    return len(logs) == 2 and all(p.exists() and p.read_text().count(" sum ") == 2 for p in logs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with Cluster.build(2) as cluster, tempfile.TemporaryDirectory() as tmp:
        config = cluster.write_config(Path(tmp) / "hosts.toml", state_dir=Path(tmp) / "state", workdirs=Path(tmp) / "hosts")
        store = Store.for_state_dir(inventory.load(config).state_dir, actor="bench")
        loop = subprocess.Popen([HEADNODE, "scheduler", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while lease.active(store) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            by_hand(cluster, "warmup")  # page cache, sshd, torch imports: neither side pays first
            hand, ours = [], []
            for i in range(args.repeat):
                hand.append(by_hand(cluster, f"hand-{i}"))
                t0 = time.perf_counter()
                job_id = submit(config, "ok")
                row = wait_for(store, job_id, lambda r: r["state"] in ("SUCCEEDED", "FAILED"))
                ours.append(time.perf_counter() - t0)
                if row["state"] != "SUCCEEDED":
                    raise SystemExit(f"job {job_id} failed: {row['reason']}")
                print(f"  run {i + 1}: by hand {hand[-1]:.2f} s, headnode {ours[-1]:.2f} s", flush=True)
            h, o = statistics.median(hand), statistics.median(ours)
            verdict = "met" if o / h <= GOAL else "NOT met"
            print(f"(a) submit -> SUCCEEDED, 2 hosts x 2 ranks: headnode {o:.2f} s vs torchrun by hand over "
                  f"parallel ssh {h:.2f} s (medians of {args.repeat}) = {o / h:.2f}x; goal <= {GOAL:.2f}x: {verdict}")  # fmt: skip

            cancels, loop_share = [], []
            for _ in range(args.repeat):
                job_id = submit(config, "sleep")
                wait_for(store, job_id, lambda r, job_id=job_id: past_allreduce(store, job_id), poll=0.1)
                t0 = time.perf_counter()
                headnode("cancel", str(job_id), "--config", str(config))
                cancels.append(time.perf_counter() - t0)
                ts = dict(store.execute("SELECT what, ts FROM events WHERE object = ? AND what IN "
                                        "('cancel requested', 'CANCELLED')", (f"job:{job_id}",)).fetchall())  # fmt: skip
                loop_share.append(ts["CANCELLED"] - ts["cancel requested"])
                left = {h.name: cluster.pids(h.name, {"HEADNODE_JOB_ID": str(job_id)}) for h in cluster.hosts}
                if any(left.values()):
                    raise SystemExit(f"job {job_id}: processes left after the cancel returned: {left}")
            print(f"(c) cancel -> verified, 2 hosts x 2 ranks: {statistics.median(cancels):.2f} s median "
                  f"(runs: {', '.join(f'{c:.2f}' for c in cancels)}), of which the loop's teardown "
                  f"{statistics.median(loop_share):.2f} s and the rest the CLI; /proc on both hosts checked empty")  # fmt: skip
        finally:
            loop.terminate()
            loop.wait(30)
            store.close()
            cluster.kill_jobs()
    return 0


if __name__ == "__main__":
    sys.exit(main())

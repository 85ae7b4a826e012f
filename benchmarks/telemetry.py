"""Telemetry costs: the head's ingest of 2,048 GPUs at 1 Hz, the sampler on a host, a week of retention.

    python benchmarks/telemetry.py [--seconds 300] [--skip-sampler] [--skip-week]

1. Ingest: 256 synthetic hosts x 8 GPUs, one JSON line per host per second, through the collector's
   own writer step (parse, batch insert, `latest` upsert, up/down, hang checks over 32 running
   jobs, retention). Simulated seconds run back to back; the CPU time per simulated second is the
   share of one head core. Goal < 5 %. Baseline in the same run: the same rows written the obvious
   way, sqlite-utils insert_all / upsert_all (FIELD-NOTES: they commit every ~76-row chunk).
2. Sampler: streamed over SSH from a namespace host (needs root) for --sampler-seconds at 1 Hz; its
   own CPU time per second of wall time. Goal < 1 % of one core. Baseline: the same program's cost
   for one sample (--once), i.e. the interpreter start it pays once.
3. Retention: a week of 1 Hz samples for 64 GPUs (and their host), inserted an hour at a time and
   downsampled after each hour as the collector does. Reports the store size against the size the
   same week would take undownsampled (bytes per raw row measured in the first hour).

The SSH transport's own CPU on the head (paramiko, one channel per host) is not in (1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.hosts import sync_inventory  # noqa: E402
from scheduler.inventory import Host, Inventory, Settings  # noqa: E402
from scheduler.store import Store, dumps  # noqa: E402
from scheduler.telemetry.collector import Collector, parse  # noqa: E402
from scheduler.telemetry.ingest import downsample  # noqa: E402

HOSTS, GPUS = 256, 8
INGEST_GOAL, SAMPLER_GOAL = 0.05, 0.01


def synthetic_line(host: int, t: int, rng: random.Random) -> str:
    gpus = [
        {"index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{host:04d}-{i}", "util": rng.randint(0, 100),
         "mem_util": rng.randint(0, 60), "mem_used": rng.randint(1, 80) * 2**30, "mem_total": 85520809984,
         "temp": rng.randint(30, 80), "power": rng.uniform(70, 700), "power_limit": 700.0, "pstate": 0,
         "sm_clock": 1980, "mem_clock": 2619, "fan": None,
         "processes": [{"pid": 40000 + i, "job": str(host // 8 + 1), "mem_used": 70 * 2**30}]}
        for i in range(GPUS)
    ]  # fmt: skip
    sample = {
        "format": 1, "ts": float(t), "hostname": f"gpu{host:03d}",
        "host": {"cpus": 192, "cpu_percent": rng.uniform(0, 100), "mem_used": 2**38, "mem_total": 2**41,
                 "mem_percent": 12.5, "load": [10.0, 9.0, 8.0], "disk_used": 2**40, "disk_total": 2**43,
                 "net_rx_bps": 1e9, "net_tx_bps": 1e9},
        "gpus": gpus, "jobs": {str(host // 8 + 1): {"pids": list(range(40000, 40000 + GPUS)), "cpu_percent": 800.0}},
        "nvml": None, "driver": "550.90.07",
    }  # fmt: skip
    return json.dumps(sample, separators=(",", ":"))


def bench_ingest(seconds: int) -> float:
    rng = random.Random(0)
    # Lines are pre-rendered: the hosts produce them, the head only parses.
    lines = [[synthetic_line(h, t, rng) for h in range(HOSTS)] for t in range(8)]
    with tempfile.TemporaryDirectory(prefix="headnode-bench-") as tmp:
        hosts = tuple(Host(name=f"gpu{i:03d}", address=f"10.1.{i // 200}.{i % 200 + 1}") for i in range(HOSTS))
        inv = Inventory(path=None, cluster_name="bench", state_dir=Path(tmp), hosts=hosts, settings=Settings())
        store = Store.for_state_dir(tmp)
        sync_inventory(store, inv)
        _running_jobs(store, inv)
        c = Collector(inv, store=True)  # never started, so it never connects: lines are fed in below
        t0 = time.time()
        per_window = []
        cpu0 = time.process_time()
        window = time.process_time()
        for s in range(seconds):
            now = t0 + s
            for h, line in zip(hosts, lines[s % len(lines)]):
                c.receive(h.name, parse(line), now)
            c.tick(store, now)
            if (s + 1) % 60 == 0:
                per_window.append((time.process_time() - window) / 60)
                window = time.process_time()
        ours = (time.process_time() - cpu0) / seconds
        rows = store.one("SELECT count(*) AS n FROM samples")["n"]
        store.close()

    base = _insert_all_baseline(lines, seconds)
    print(f"ingest: {HOSTS * GPUS} GPUs at 1 Hz, {seconds} simulated s, {rows:,} history rows")
    print(f"  collector writer step: {1000 * ours:.1f} ms CPU per second = {100 * ours:.2f} % of one core "
          f"(goal < {100 * INGEST_GOAL:.0f} %); per minute: {', '.join(f'{100 * w:.2f} %' for w in per_window)}")
    print(f"  baseline sqlite-utils insert_all + upsert_all of the same rows: {1000 * base:.1f} ms per second")
    print(f"  ratio ours / baseline: {ours / base:.2f}x; vs goal: {ours / INGEST_GOAL:.2f}")
    return ours


def _running_jobs(store: Store, inv: Inventory) -> None:
    """32 running 8-host jobs, so the hang check reads real evidence every tick."""
    with store.tx():
        for j in range(HOSTS // 8):
            store.execute(
                "INSERT INTO jobs (id, name, state, command, nodes, gpus_per_node, attempt, submitted_at, started_at, progress_at) "
                "VALUES (?, ?, 'RUNNING', '[]', 8, 8, 1, 0, ?, ?)",
                (j + 1, f"job{j + 1}", time.time(), time.time()),
            )
            for k in range(8):
                store.execute(
                    "INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus) VALUES (?, 1, ?, ?, ?)",
                    (j + 1, k, inv.hosts[j * 8 + k].name, dumps(list(range(GPUS)))),
                )


def _insert_all_baseline(lines: list[list[str]], seconds: int) -> float:
    """The same writes the obvious way: sqlite-utils insert_all for history, upsert_all for `latest`."""
    seconds = min(seconds, 60)
    with tempfile.TemporaryDirectory(prefix="headnode-bench-") as tmp:
        store = Store.for_state_dir(tmp)
        t0 = time.process_time()
        for s in range(seconds):
            rows, latest = [], []
            for line in lines[s % len(lines)]:
                sample = json.loads(line)
                host = sample["hostname"]
                rows.append({"ts": s, "host": host, "gpu": -1, "resolution": 1, "cpu_percent": sample["host"]["cpu_percent"]})
                latest.append({"host": host, "gpu": -1, "ts": s, "sample": {**sample["host"], "jobs": sample["jobs"]}})
                for g in sample["gpus"]:
                    rows.append({"ts": s, "host": host, "gpu": g["index"], "resolution": 1, "util": g["util"],
                                 "mem_used": g["mem_used"], "mem_total": g["mem_total"], "temp": g["temp"], "power": g["power"]})
                    latest.append({"host": host, "gpu": g["index"], "ts": s, "sample": g})  # fmt: skip
            store.db["samples"].insert_all(rows)
            store.db["latest"].upsert_all(latest, pk=("host", "gpu"))
        cost = (time.process_time() - t0) / seconds
        store.close()
    return cost


def bench_sampler(seconds: int) -> float | None:
    if os.geteuid() != 0:
        print("sampler: skipped (building the namespace host needs root)")
        return None
    from scheduler.execute import Executor
    from scheduler.inventory import load
    from scheduler.telemetry.collector import sampler_argv
    from tests.cluster import Cluster

    with Cluster.build(1) as cluster, tempfile.TemporaryDirectory(prefix="headnode-bench-") as tmp:
        cfg = cluster.write_config(Path(tmp) / "hosts.toml", state_dir=Path(tmp) / "state", workdirs=Path(tmp) / "hosts")
        inv = load(cfg)
        host = inv.hosts[0]
        with Executor(inv) as ex:
            once = ex.run(host, sampler_argv(host, 0.25, once=True), timeout=60)
            first_cost = json.loads(once.stdout)["self_cpu_s"] if once.ok else None
            samples = []
            with ex.stream(host, sampler_argv(host, 1.0)) as stream:
                for line in stream:
                    samples.append(json.loads(line))
                    if len(samples) > seconds:
                        break
    a, b = samples[1], samples[-1]  # from the second line: the start-up is paid once
    share = (b["self_cpu_s"] - a["self_cpu_s"]) / (b["ts"] - a["ts"])
    print(f"sampler: {len(samples)} samples at 1 Hz over SSH on a namespace host")
    print(f"  steady state: {1000 * share:.2f} ms CPU per second = {100 * share:.3f} % of one core (goal < {100 * SAMPLER_GOAL:.0f} %)")
    if first_cost:
        print(f"  baseline, one --once run (start-up + 1 sample): {1000 * first_cost:.0f} ms CPU; "
              f"one hour of streaming costs {3600 * share / first_cost:.1f}x that")
    print(f"  ratio vs goal: {share / SAMPLER_GOAL:.3f}")
    return share


def bench_week(gpus: int = 64, hours: int = 7 * 24) -> None:
    settings = Settings()
    t0 = 1_699_999_980.0  # minute-aligned
    with tempfile.TemporaryDirectory(prefix="headnode-bench-") as tmp:
        store = Store.for_state_dir(tmp)
        db = Path(tmp) / "headnode.db"
        started = time.perf_counter()
        raw_bytes_per_row = None
        for h in range(hours):
            with store.tx():
                store.execute(
                    "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i < 3599), "
                    "g(j) AS (SELECT -1 UNION ALL SELECT j + 1 FROM g WHERE j < ?) "
                    "INSERT INTO samples (ts, host, gpu, resolution, util, mem_used, mem_total, temp, power) "
                    "SELECT ? + i, 'gpu01', j, 1, abs(random()) % 101, 7e10, 85520809984, 60, 400.5 FROM t, g",
                    (gpus - 1, t0 + h * 3600),
                )
            if raw_bytes_per_row is None:
                store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                raw_bytes_per_row = db.stat().st_size / (3600 * (gpus + 1))
            downsample(store, settings.raw_retention, settings.minute_retention, t0 + (h + 1) * 3600)
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = store.one("SELECT count(*) AS n FROM samples")["n"]
        size = db.stat().st_size
        store.close()
    raw_size = raw_bytes_per_row * 3600 * hours * (gpus + 1)
    print(f"retention: {hours} h of 1 Hz samples for {gpus} GPUs + host in {time.perf_counter() - started:.0f} s")
    print(f"  store: {rows:,} rows, {size / 1e6:.1f} MB; undownsampled it would be ~{raw_size / 1e9:.2f} GB "
          f"(ratio {size / raw_size:.3f})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=300, help="simulated seconds of ingest (default 300)")
    p.add_argument("--sampler-seconds", type=int, default=60, help="seconds of sampler streaming (default 60)")
    p.add_argument("--skip-sampler", action="store_true")
    p.add_argument("--skip-week", action="store_true")
    args = p.parse_args()
    ok = bench_ingest(args.seconds) < INGEST_GOAL
    if not args.skip_sampler:
        share = bench_sampler(args.sampler_seconds)
        ok = ok and (share is None or share < SAMPLER_GOAL)
    if not args.skip_week:
        bench_week()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

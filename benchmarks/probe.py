"""`headnode hosts probe` wall time vs. the same number of plain `ssh HOST true` run in parallel.

    python benchmarks/probe.py [--repeat 5]       # as root: builds its own 8-host namespace cluster

The baseline is what a person would do by hand: one OpenSSH process per host, all at once, doing
nothing. The probe does more (a fresh `headnode` process, Fabric handshakes, one Python program per
host that reads versions, GPUs and disk, then a store write), so the goal is to stay close to that
floor: ratio <= 1.3x. Both are measured in the same run, alternating, and the medians compared. The
same probe called in-process (a fresh Executor each time, so connects included) shows how much of the
gap is the CLI's interpreter start-up rather than SSH work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.cluster import Cluster  # noqa: E402

HEADNODE = str(Path(sys.executable).with_name("headnode"))
GOAL = 1.3


def probe_seconds(config: Path, names: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([HEADNODE, "hosts", "probe", *names, "--json", "--config", str(config)],
                       capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"probe failed ({r.returncode}): {r.stderr.strip()}")
    return elapsed


def library_seconds(config: Path, names: list[str]) -> float:
    """The same probe in this process with a fresh Executor: SSH connects and round trips, no start-up."""
    from scheduler import hosts, inventory
    from scheduler.execute import Executor

    inv = inventory.load(config)
    t0 = time.perf_counter()
    with Executor(inv) as ex:
        entries = hosts.probe(ex, [inv.host(n) for n in names])
    elapsed = time.perf_counter() - t0
    if not all(e["ok"] for e in entries):
        raise SystemExit(f"probe failed: {[e['reason'] for e in entries if not e['ok']]}")
    return elapsed


def cli_floor_seconds(config: Path) -> float:
    """`headnode hosts --json`: the same process start and store open, no SSH (where time goes)."""
    t0 = time.perf_counter()
    subprocess.run([HEADNODE, "hosts", "--json", "--config", str(config)], capture_output=True, check=True, timeout=60)
    return time.perf_counter() - t0


def ssh_seconds(cluster: Cluster, names: list[str]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cluster.ssh_argv(n, ["true"]), stdin=subprocess.DEVNULL) for n in names]
    codes = [p.wait(timeout=60) for p in procs]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise SystemExit(f"ssh failed: exit codes {codes}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side per host count (default 5)")
    args = parser.parse_args()

    with Cluster.build(8) as cluster, tempfile.TemporaryDirectory(prefix="headnode-bench-") as tmp:
        print(f"cluster: 8 namespace hosts built in {cluster.build_seconds:.2f} s")
        config = cluster.write_config(Path(tmp) / "hosts.toml", state_dir=Path(tmp) / "state",
                                      workdirs=Path(tmp) / "hosts")
        floor = statistics.median(cli_floor_seconds(config) for _ in range(args.repeat))
        print(f"headnode start-up without SSH (`hosts --json`): {floor:.3f} s (median)")
        print(f"{'hosts':>5}  {'ssh true':>9}  {'probe CLI':>9}  {'ratio':>6}  {'probe library':>13}  {'ratio':>6}")
        worst = 0.0
        for n in (1, 4, 8):
            names = [h.name for h in cluster.hosts[:n]]
            probe_seconds(config, names)  # warm the page cache and the store once
            ssh, cli, lib = [], [], []
            for _ in range(args.repeat):
                ssh.append(ssh_seconds(cluster, names))
                cli.append(probe_seconds(config, names))
                lib.append(library_seconds(config, names))
            base = statistics.median(ssh)
            ratio = statistics.median(cli) / base
            worst = max(worst, ratio)
            print(f"{n:>5}  {base:>8.3f}s  {statistics.median(cli):>8.3f}s  {ratio:>5.2f}x  "
                  f"{statistics.median(lib):>12.3f}s  {statistics.median(lib) / base:>5.2f}x")
        verdict = "meets" if worst <= GOAL else "misses"
        print(f"worst ratio {worst:.2f}x {verdict} the goal of <= {GOAL}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

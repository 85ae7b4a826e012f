"""Telemetry on the namespace cluster: real sshd hosts, samplers shipped over SSH, real torchrun jobs
started by the real scheduler loop."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from pathlib import Path

import pytest

from scheduler import cli, inventory, jobs, loop
from scheduler.store import Store, loads
from scheduler.telemetry.collector import Collector

FAST = "\n[scheduler]\ncycle_interval = 0.5\nlease_ttl = 5.0\n\n[telemetry]\ninterval = 0.5\ndown_after = 4.0\nhang_after = 12.0\n"

# Two ranks on two hosts. "healthy" all-reduces and logs a line per step for as long as it runs (it
# never ends: the test stops it), so its log grows every few tenths of a second, far inside hang_after
# even on a loaded machine; "hang" has rank 1 sleep before its first all-reduce, so rank 0 blocks in
# the collective for good (the stuck all-reduce).
SCRIPT = """
import sys, time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
print("rank", rank, "ready", flush=True)
if sys.argv[1] == "hang" and rank == 1:
    time.sleep(3600)
t, step = torch.ones(4), 0
while True:
    dist.all_reduce(t)
    step += 1
    print("step", step, flush=True)
    time.sleep(0.1)
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def wait_for(what: str, check, timeout: float, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def inv(cluster_config: Path) -> inventory.Inventory:
    cluster_config.write_text(cluster_config.read_text() + FAST)
    return inventory.load(cluster_config)


@pytest.fixture
def store(inv):
    with Store.for_state_dir(inv.state_dir) as s:
        yield s


def test_top_once_json_shows_every_host_with_cpu_memory_and_no_gpus(inv, cluster):
    code, out = run("top", "--once", "--json", "--config", str(inv.path))
    assert code == 0
    hosts = json.loads(out)["hosts"]
    assert [h["name"] for h in hosts] == [h.name for h in cluster.hosts]
    for h in hosts:
        assert h["state"] == "up"
        assert 0 <= h["cpu_percent"] <= 100 and 0 < h["mem_percent"] < 100
        assert h["gpus"] == [] and "NVML" in h["nvml"]


@pytest.mark.slow
def test_a_cut_host_turns_down_within_the_timeout_and_up_after_healing(inv, store, cluster):
    name = cluster.hosts[1].name
    state = lambda: store.one("SELECT state, reason FROM hosts WHERE name = ?", (name,))  # noqa: E731
    with Collector(inv):
        wait_for("every host up", lambda: store.one("SELECT count(*) AS n FROM hosts WHERE state = 'up'")["n"] == 3, 30)
        assert all(len(samplers(cluster, h.name)) == 1 for h in cluster.hosts)  # one stream per host
        cluster.cut(name)
        try:
            cut_at = time.monotonic()
            wait_for(f"{name} down", lambda: state()["state"] == "down", inv.settings.down_after + 10)
            assert time.monotonic() - cut_at >= inv.settings.down_after - 1  # not before the timeout
            assert state()["reason"].startswith("no telemetry for")
            code, out = run("top", "--once", "--json", "--config", str(inv.path))  # no loop: samples itself
            seen = {h["name"]: h for h in json.loads(out)["hosts"]}
            assert code == 0 and seen[name]["state"] == "down" and seen[name]["reason"].startswith("unreachable")
            assert seen[cluster.hosts[0].name]["state"] == "up"
        finally:
            cluster.heal(name)
        wait_for(f"{name} up again", lambda: state()["state"] == "up", 45)
        others = store.query("SELECT name, state FROM hosts WHERE name != ?", (name,))
        assert {r["state"] for r in others} == {"up"}
    events = [e["what"] for e in store.query("SELECT what FROM events WHERE object = ? ORDER BY id", (f"host:{name}",))]
    assert events[-2:] == ["down", "up"]
    # Stopping the collector ends the SSH sessions, and with them the samplers (the one on the cut
    # host from before the cut may outlive it until its stalled write gives up).
    for h in cluster.hosts:
        if h.name != name:
            wait_for(f"no sampler left on {h.name}", lambda h=h: not samplers(cluster, h.name), 15)


def samplers(cluster, name: str) -> list[int]:
    found = []
    for pid in cluster.pids(name):
        with contextlib.suppress(OSError):
            if b"headnode-sampler" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.mark.slow
def test_ranks_are_attributed_to_their_job_and_a_job_stuck_in_a_collective_is_flagged(inv, store, cluster, tmp_path):
    script = tmp_path / "collective.py"
    script.write_text(SCRIPT)
    submit = lambda mode: jobs.submit(store, inv, jobs.JobSpec(command=["python", str(script), mode], nodes=2, name=mode)).id  # noqa: E731
    healthy, hung = submit("healthy"), submit("hang")
    stop = threading.Event()
    t = threading.Thread(target=loop.run_forever, args=(inv,), kwargs={"stop_event": stop}, daemon=True)
    t.start()
    try:
        row = lambda j: store.one("SELECT state, flags, reason FROM jobs WHERE id = ?", (j,))  # noqa: E731
        wait_for("both jobs running", lambda: row(healthy)["state"] == row(hung)["state"] == "RUNNING", 120)

        # Attribution: every process of the healthy job, on each of its hosts, and nothing else.
        nodes = store.query("SELECT host FROM job_nodes WHERE job_id = ?", (healthy,))
        assert len(nodes) == 2

        def attributed() -> bool:
            for n in nodes:
                truth = cluster.pids(n["host"], {"HEADNODE_JOB_ID": str(healthy)})
                latest = store.one("SELECT sample FROM latest WHERE host = ? AND gpu = -1", (n["host"],))
                seen = loads(latest["sample"])["jobs"].get(str(healthy), {}) if latest else {}
                if not truth or seen.get("pids") != sorted(truth):
                    return False
            return True

        wait_for("the healthy job's ranks attributed on both hosts", attributed, 30)
        code, out = run("top", "--once", "--json", "--config", str(inv.path))  # a loop collects: read the store
        assert code == 0 and any(str(healthy) in h["jobs"] for h in json.loads(out)["hosts"])

        wait_for("the hung job flagged", lambda: "hang" in loads(row(hung)["flags"]), inv.settings.hang_after + 60)
        assert row(healthy)["state"] == "RUNNING"  # still logging steps, so it progresses ...
        assert loads(row(healthy)["flags"]) == []  # ... and is not flagged
        assert store.one("SELECT count(*) AS n FROM events WHERE object = ? AND what = 'alert'", (f"job:{healthy}",))["n"] == 0
        alert = store.one("SELECT ts, reason FROM events WHERE object = ? AND what = 'alert'", (f"job:{hung}",))
        assert alert["reason"].startswith("hang: no progress for")
        stalled_at = store.one("SELECT progress_at FROM jobs WHERE id = ?", (hung,))["progress_at"]
        # Not before the timeout. How long after it is the machine's business (a loaded machine
        # probes late), so there is no upper bound.
        assert alert["ts"] - stalled_at >= inv.settings.hang_after
    finally:
        stop.set()
        t.join(30)  # the jobs outlive the loop; cluster_config's teardown kills their processes

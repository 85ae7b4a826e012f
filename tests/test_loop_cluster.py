"""The scheduler on the namespace cluster: real sshd hosts, real torchrun on CPU/gloo, the real CLI.

Processes are checked from the test through /proc (`cluster.pids`), never through headnode.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.cli import main
from scheduler.store import Store
from tests.support import scheduler, wait_state

pytestmark = pytest.mark.slow

FAST = "\n[scheduler]\ncycle_interval = 0.3\ngrace_period = 3\nlease_ttl = 4\nnode_lost_timeout = 6\n"
HEADNODE = str(Path(sys.executable).with_name("headnode"))

# What every rank runs: a gloo all-reduce over the whole gang, one line of facts, then by mode:
# "ok" ends, "sleep" waits to be stopped, "fail" makes the last rank exit 1 while the others wait.
RANK = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([rank + 1.0])
dist.all_reduce(t)
print(f"rank {rank} of {world} sum {t.item():g} host {os.environ['HEADNODE_HOST']} "
      f"cvd {os.environ['CUDA_VISIBLE_DEVICES']} run {os.environ['TORCHELASTIC_RUN_ID']}", flush=True)
mode = sys.argv[1]
if mode == "fail" and rank == world - 1:
    os._exit(1)
if mode in ("sleep", "fail"):
    time.sleep(300)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)
"""


@pytest.fixture
def config(cluster_config: Path) -> Path:
    cluster_config.write_text(cluster_config.read_text() + FAST)
    return cluster_config


@pytest.fixture
def store(config: Path):
    with Store.for_state_dir(inventory.load(config).state_dir) as s:
        yield s


def cli_json(capsys, command: str, *argv: str):
    capsys.readouterr()
    code = main([command, "--json", *argv])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def submit(capsys, config: Path, *argv: str) -> int:
    return cli_json(capsys, "submit", "--config", str(config), *argv)["id"]


def rank_job(config, capsys, mode: str, *opts: str) -> int:
    return submit(capsys, config, "--nodes", "2", *opts, "--", sys.executable, "-c", RANK, mode)


def wait_allreduced(store: Store, job_id: int, timeout: float = 60.0) -> None:
    """Until every node's log shows its ranks past the all-reduce (the gang is formed and working).
    The hosts' workdirs are on this machine's filesystem, so the test reads the logs directly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = store.query("SELECT * FROM job_nodes WHERE job_id = ? AND pid IS NOT NULL", (job_id,))
        logs = [Path(n["run_dir"]) / f"attempt-{n['attempt']}" / f"node-{n['node_rank']}.log" for n in nodes]
        if logs and all(p.exists() and " sum " in p.read_text() for p in logs):
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: the ranks did not all get past the all-reduce")


def job_pids(cluster, job_id: int) -> dict[str, list[int]]:
    return {h.name: cluster.pids(h.name, {"HEADNODE_JOB_ID": str(job_id)}) for h in cluster.hosts}


def logs(capsys, config: Path, job_id: int) -> list[str]:
    capsys.readouterr()
    assert main(["logs", str(job_id), "--config", str(config)]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_two_host_allreduce_job_succeeds_with_placement_ports_exit_codes_and_logs_of_all_ranks(cluster, config, store, capsys):
    with scheduler(config):
        job_id = rank_job(config, capsys, "ok", "--gpus-per-node", "2")
        row = wait_state(store, job_id, {"SUCCEEDED", "FAILED"})
    assert row["state"] == "SUCCEEDED", row["reason"]

    shown = cli_json(capsys, "show", str(job_id), "--config", str(config))
    a, b = cluster.hosts[0].name, cluster.hosts[1].name
    assert [(n["host"], n["node_rank"], n["gpus"], n["port"], n["exit_code"]) for n in shown["nodes"]] == [
        (a, 0, [0, 1], 29500, 0), (b, 1, [0, 1], 29500, 0),
    ]  # fmt: skip
    facts = sorted(line for line in logs(capsys, config, job_id) if " sum " in line)
    assert facts == [
        f"[node {r // 2} rank {r}] rank {r} of 4 sum 10 host {host} cvd 0,1 run {job_id}-1" for r, host in enumerate([a, a, b, b])
    ], facts
    assert job_pids(cluster, job_id) == {h.name: [] for h in cluster.hosts}


def test_two_jobs_at_once_on_the_same_hosts_get_disjoint_gpus_and_ports(cluster, config, store, capsys):
    with scheduler(config):
        first = rank_job(config, capsys, "ok", "--gpus-per-node", "1")
        second = rank_job(config, capsys, "ok", "--gpus-per-node", "1")
        rows = [wait_state(store, j, {"SUCCEEDED", "FAILED"}) for j in (first, second)]
    assert [r["state"] for r in rows] == ["SUCCEEDED", "SUCCEEDED"], [r["reason"] for r in rows]
    a, b = cluster.hosts[0].name, cluster.hosts[1].name
    seen, ports = {}, {}
    for job_id in (first, second):
        lines = [line.split() for line in logs(capsys, config, job_id) if " sum " in line]
        seen[job_id] = sorted((words[11], words[13]) for words in lines)  # (host, CUDA_VISIBLE_DEVICES)
        shown = cli_json(capsys, "show", str(job_id), "--config", str(config))
        ports[job_id] = {(n["host"], n["port"]) for n in shown["nodes"]}
    assert seen == {first: [(a, "0"), (b, "0")], second: [(a, "1"), (b, "1")]}
    assert ports == {first: {(a, 29500), (b, 29500)}, second: {(a, 29501), (b, 29501)}}
    starts = store.query("SELECT id, started_at, ended_at FROM jobs ORDER BY id")
    assert starts[1]["started_at"] < starts[0]["ended_at"]  # they really ran at the same time


def test_cancelling_a_running_two_host_job_leaves_no_process_with_its_marker(cluster, config, store, capsys):
    with scheduler(config):
        job_id = rank_job(config, capsys, "sleep")
        wait_allreduced(store, job_id)
        assert main(["cancel", str(job_id), "--config", str(config)]) == 0
        row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row["state"] == "CANCELLED"
    # On a loaded machine a rank may miss the grace period and need SIGKILL: verified all the same.
    a, b = cluster.hosts[0].name, cluster.hosts[1].name
    assert re.search(rf"verified: no process left on {a}, {b}( \(\d+ needed SIGKILL\))?$", row["reason"]), row["reason"]
    assert job_pids(cluster, job_id) == {h.name: [] for h in cluster.hosts}


def test_one_failing_rank_tears_down_the_other_host_and_a_retry_runs_a_second_attempt(cluster, config, store, capsys):
    with scheduler(config):
        job_id = rank_job(config, capsys, "fail", "--retries", "1")
        row = wait_state(store, job_id, {"SUCCEEDED", "FAILED", "CANCELLED"}, timeout=150)
    assert (row["state"], row["attempt"]) == ("FAILED", 2), row["reason"]
    a, b = cluster.hosts[0].name, cluster.hosts[1].name
    verified = rf"verified: no process left on {a}, {b}( \(\d+ needed SIGKILL\))?"
    assert re.fullmatch(rf"node [01] on ({a}|{b}) exited with status 1; {verified}", row["reason"])
    assert job_pids(cluster, job_id) == {h.name: [] for h in cluster.hosts}
    attempts = store.query("SELECT attempt, state FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
    assert attempts == [{"attempt": 1, "state": "FAILED"}, {"attempt": 2, "state": "FAILED"}]


def test_a_loop_killed_mid_job_is_replaced_at_once_and_the_job_succeeds_exactly_once(cluster, config, store, capsys):
    def scheduler_run():
        return subprocess.Popen([HEADNODE, "scheduler", "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    job_id = submit(capsys, config, "--nodes", "2", "--", "sh", "-c", "sleep 4; echo once >> count")
    first = scheduler_run()
    try:
        wait_state(store, job_id, {"RUNNING"}, timeout=60)
        first.kill()
        first.wait()
        # The dead loop ran on this machine: its lease is free before its ttl, and the takeover says why.
        second = scheduler_run()
        row = wait_state(store, job_id, {"SUCCEEDED", "FAILED"}, timeout=60)
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(30)
    takeover = store.one("SELECT what, reason FROM events WHERE object = 'lease:scheduler' AND what LIKE 'took over%'")
    assert takeover["what"] == "took over a dead holder's lease", takeover
    assert takeover["reason"].endswith(f"from {first.pid}@{socket.gethostname()}: its process {first.pid} on this machine is gone")
    assert (row["state"], row["attempt"]) == ("SUCCEEDED", 1), row["reason"]
    workdirs = [Path(n["run_dir"]) for n in store.query("SELECT run_dir FROM job_nodes WHERE job_id = ?", (job_id,))]
    assert [(d / "count").read_text() for d in workdirs] == ["once\n", "once\n"]
    starts = store.query("SELECT id FROM events WHERE object = ? AND what = 'STARTING'", (f"job:{job_id}",))
    assert len(starts) == 1


def test_a_rendezvous_port_taken_on_node_0s_host_starts_no_node_and_the_gang_runs_on_the_next_port(cluster, config, store, capsys):
    a, b = cluster.hosts[0].name, cluster.hosts[1].name
    listen = "import socket, sys, time; s = socket.create_server(('', 29500)); print('up', flush=True); time.sleep(300)"
    squatter = subprocess.Popen(["ip", "netns", "exec", cluster.hosts[0].netns, sys.executable, "-c", listen],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert squatter.stdout.readline() == "up\n"
        with scheduler(config):
            job_id = rank_job(config, capsys, "ok")
            row = wait_state(store, job_id, {"SUCCEEDED", "FAILED"})
    finally:
        squatter.kill()
        squatter.wait()
    assert (row["state"], row["attempt"]) == ("SUCCEEDED", 2), row["reason"]
    attempts = store.query("SELECT attempt, state, reason FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
    assert [(x["attempt"], x["state"], x["reason"]) for x in attempts] == [
        (1, "ABORTED", f"port 29500 busy on {a}; trying another"), (2, "SUCCEEDED", "all 2 nodes exited 0"),
    ]  # fmt: skip
    shown = cli_json(capsys, "show", str(job_id), "--config", str(config))
    assert [(n["host"], n["port"]) for n in shown["nodes"]] == [(a, 29501), (b, 29501)]
    # Node 0 checked before starting, and node 1 was never asked: attempt 1 left nothing on either host.
    nodes = store.query("SELECT run_dir FROM job_nodes WHERE job_id = ? AND attempt = 1 ORDER BY node_rank", (job_id,))
    assert [(Path(n["run_dir"]) / "attempt-1").exists() for n in nodes] == [False, False]


def test_a_cut_host_makes_the_job_node_lost_and_the_surviving_hosts_ranks_are_gone(cluster, config, store, capsys):
    survivor, cut = cluster.hosts[0].name, cluster.hosts[1].name
    with scheduler(config):
        job_id = rank_job(config, capsys, "sleep")
        wait_allreduced(store, job_id)
        cluster.cut(cut)
        try:
            t0 = time.monotonic()
            row = wait_state(store, job_id, {"FAILED", "SUCCEEDED", "CANCELLED"}, timeout=60)
            took = time.monotonic() - t0
            assert cluster.pids(survivor, {"HEADNODE_JOB_ID": str(job_id)}) == []
        finally:
            cluster.heal(cut)
        assert row["state"] == "FAILED" and row["reason"].startswith(f"NODE_LOST: {cut} stopped answering for over 6 s")
        assert f"no process left on {survivor}" in row["reason"]
        assert took < 6 + 20  # the timeout, a probe's own timeout and a cycle or two: never unbounded
        # Healed, the host answers again: what the job left there is stopped and the node swept.
        deadline = time.monotonic() + 60
        while store.one("SELECT count(*) AS n FROM job_nodes WHERE state = 'LOST'")["n"] and time.monotonic() < deadline:
            time.sleep(0.5)
    assert store.query("SELECT host, state FROM job_nodes WHERE job_id = ? ORDER BY node_rank", (job_id,)) == [
        {"host": survivor, "state": "EXITED"}, {"host": cut, "state": "EXITED"},
    ]  # fmt: skip
    assert job_pids(cluster, job_id) == {h.name: [] for h in cluster.hosts}

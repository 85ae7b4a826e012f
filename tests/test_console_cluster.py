"""The console against the namespace cluster: real sshd hosts, the loop embedded in the console,
a 2-host torchrun job seen RUNNING then SUCCEEDED, and its log lines from both nodes."""

from __future__ import annotations

import sys
import time

import pytest
from textual.widgets import Log

from console.app import build_app
from console.widgets.line_table import LineTable
from scheduler import hosts, inventory, jobs
from scheduler.store import Store
from tests.console_synthetic import screen_text, settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.cluster]

FAST = "\n[scheduler]\ncycle_interval = 0.3\ngrace_period = 3\nlease_ttl = 4\nnode_lost_timeout = 6\n"
# Every rank: a gloo all-reduce across both hosts, a line naming itself, a few seconds of "work".
RANK = """
import os, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([1.0])
dist.all_reduce(t)
print(f"hello from rank {dist.get_rank()} of {int(t.item())} on {os.environ['HEADNODE_HOST']}", flush=True)
time.sleep(float(os.environ.get("WORK_S", "4")))
dist.destroy_process_group()
os._exit(0)
"""


async def until(pilot, cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not shown after {timeout:.0f} s:\n{screen_text(pilot.app)}")
        await settle(pilot)
        await pilot.pause(0.2)


def submit(config, **env) -> tuple[inventory.Inventory, dict]:
    config.write_text(config.read_text() + FAST)
    inv = inventory.load(config)
    with Store.for_state_dir(inv.state_dir) as store:
        hosts.sync_inventory(store, inv)
        spec = jobs.JobSpec(command=[sys.executable, "-c", RANK], name="hello", nodes=2, gpus_per_node=1, env=env)
        return inv, jobs.submit(store, inv, spec)


async def test_the_console_shows_the_hosts_a_two_host_job_running_then_succeeded_and_both_nodes_logs(cluster, cluster_config):
    inv, job = submit(cluster_config)
    names = [h.name for h in cluster.hosts]

    app = build_app(inv, embedded_loop=True, mode="cluster")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.embedded, 20, "the embedded loop")
        assert "scheduler: embedded" in screen_text(app).splitlines()[0]
        table = app.screen.query_one("#hosts-table", LineTable)
        await until(pilot, lambda: sorted(table.keys) == sorted(names), 20, "the hosts")

        await pilot.press("2")
        seen = set()

        def state() -> str | None:
            row = app.screen.query_one(LineTable).row(job.id)
            if row:
                seen.add(row[2])
            return row and row[2]

        await until(pilot, lambda: state() == "RUNNING", 90, "job RUNNING")
        await pilot.press("enter")  # the job screen, following the merged log of both nodes
        log = app.screen.query_one(Log)
        await until(pilot, lambda: sum("hello from rank" in line for line in log.lines) == 2, 60, "both nodes' log lines")
        lines = sorted(line for line in log.lines if "hello from rank" in line)
        assert lines == [f"[node 0 rank 0] hello from rank 0 of 2 on {names[0]}",
                         f"[node 1 rank 1] hello from rank 1 of 2 on {names[1]}"]
        await until(pilot, lambda: app.screen.detail.job.state == "SUCCEEDED", 60, "job SUCCEEDED")
        await pilot.press("escape")
        await until(pilot, lambda: state() == "SUCCEEDED", 10, "SUCCEEDED in the queue")
    assert "RUNNING" in seen


async def test_cancel_from_the_console_stops_every_rank_and_says_cancel_verified(cluster, cluster_config):
    inv, job = submit(cluster_config, WORK_S="300")
    app = build_app(inv, embedded_loop=True)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(LineTable)
        await until(pilot, lambda: (table.row(job.id) or [None] * 3)[2] == "RUNNING", 90, "job RUNNING")
        await until(pilot, lambda: all(cluster.pids(h.name, {"HEADNODE_JOB_ID": str(job.id)}) for h in cluster.hosts[:2]),
                    30, "ranks on both hosts")
        await pilot.press("x")
        await until(pilot, lambda: "These will be stopped, and checked gone:" in screen_text(app), 10, "the confirmation")
        text = screen_text(app)
        assert f"node 0 on {cluster.hosts[0].name}" in text and f"node 1 on {cluster.hosts[1].name}" in text
        await pilot.press("y")
        await until(pilot, lambda: any(n.title == f"job {job.id}: cancel verified" and "verified: no process left" in n.message
                                       for n in app._notifications),
                    60, "cancel verified")
    assert all(cluster.pids(h.name, {"HEADNODE_JOB_ID": str(job.id)}) == [] for h in cluster.hosts)

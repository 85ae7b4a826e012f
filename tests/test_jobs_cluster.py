"""The job commands against the namespace cluster: a 2-host torchrun job followed over SSH, then
cancelled from the command line while a real loop runs; checked afterwards through /proc."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_jobs_e2e import SCRIPT, Loop, headnode, rank_nodes, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture
def config(cluster_config: Path, tmp_path: Path) -> Path:
    cluster_config.write_text(cluster_config.read_text() + "\n[scheduler]\ncycle_interval = 0.2\ngrace_period = 2\n")
    (tmp_path / "job.py").write_text(SCRIPT)
    return cluster_config


def test_cancel_of_a_followed_two_host_job_ends_the_follow_and_leaves_no_process(cluster, config, tmp_path):
    node0, node1 = cluster.hosts[0].name, cluster.hosts[1].name
    loop = Loop(config)
    try:
        sub = headnode(config, "submit", "--name", "sleepy", "-N", "2", "--", "python", str(tmp_path / "job.py"), "300")
        assert sub.returncode == 0, sub.stderr
        follow = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(config), "logs", "-f", "sleepy"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        doc = wait_state(config, "sleepy", "RUNNING")
        assert [n["host"] for n in doc["nodes"]] == [node0, node1]
        seen = ""
        deadline = time.monotonic() + 60
        while len(rank_nodes(seen)) < 2 and time.monotonic() < deadline:  # both ranks printed, over SSH
            seen += follow.stdout.readline()
        assert sorted(rank_nodes(seen).values()) == [0, 1], seen

        cancel = headnode(config, "cancel", "sleepy")
        assert cancel.returncode == 0, cancel.stderr
        assert cancel.stdout.startswith(f"job 1 cancelled; verified: no process left on {node0}, {node1}")
        assert follow.wait(timeout=30) == 0  # the follow ends by itself once the job has ended
    finally:
        loop.stop()
    for host in (node0, node1):
        assert cluster.pids(host, {"HEADNODE_JOB_ID": "1"}) == []
    assert headnode(config, "wait", "sleepy").returncode == 1

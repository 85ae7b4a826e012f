"""The job commands through the real entry point (`python -m scheduler`, separate processes) beside a
real `scheduler run`: real torchrun on this machine as two hosts that both run locally."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import kill_job_processes

pytestmark = pytest.mark.slow

# Other test runs on this machine start local jobs too: a port range of our own avoids their
# rendezvous ports (torchrun would fail to bind, and the test would fail for nothing).
PORT = random.randrange(30000, 60000, 100)
FAST = f"[scheduler]\ncycle_interval = 0.2\ngrace_period = 2\nlease_ttl = 3\nport_range = [{PORT}, {PORT + 99}]\n"
SCRIPT = """
import os, sys, time
for i in range(2):
    print(f"hello {i} from rank {os.environ['RANK']}", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "hosts.toml"
    hosts = "".join(
        f'[[hosts]]\nname = "{h}"\naddress = "localhost"\npython = {json.dumps(sys.executable)}\n'
        f'workdir = "{tmp_path / h}"\n\n'
        for h in ("l0", "l1")
    )
    path.write_text(f'[cluster]\nstate_dir = "state"\n\n{hosts}{FAST}')
    (tmp_path / "job.py").write_text(SCRIPT)
    yield path
    kill_job_processes([tmp_path])


def headnode(config: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", "--config", str(config), *argv],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


class Loop:
    """`headnode scheduler run` in the background, stopped the way systemd stops it (SIGTERM)."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "--config", str(config), "scheduler", "run"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while headnode(config, "scheduler", "status").returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, self.proc.communicate()
            time.sleep(0.1)

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


def wait_state(config: Path, job: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = json.loads(headnode(config, "show", job, "--json").stdout)
        if doc["state"] == state:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"job {job} still {doc['state']} ({doc['reason']})")


def marked(job_id: int, root: Path) -> list[int]:
    """Live processes carrying the job's marker, read from /proc (not through headnode). Other test
    runs on this machine have a job 1 too: only those whose run dir lies under `root` are ours."""
    want = f"HEADNODE_JOB_ID={job_id}".encode()
    ours = f"HEADNODE_RUN_DIR={root}/".encode()
    pids = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if want in env and any(e.startswith(ours) for e in env) and state != b"Z":
            pids.append(int(p))
    return pids


def rank_nodes(output: str) -> dict[int, int]:
    """{global rank: node} as the log prefixes say. c10d rendezvous hands out global ranks in its own
    order, so node 1 may well hold rank 0: the prefixes must say which is which, not assume it."""
    found = {}
    for m in re.finditer(r"^\[node (\d+) rank (\d+)\] hello \d from rank (\d+)$", output, re.M):
        assert m[2] == m[3]  # the prefix names the rank that printed the line
        found[int(m[2])] = int(m[1])
    return found


def test_submit_follow_wait_and_show_a_two_node_job_run_by_a_real_loop(config, tmp_path):
    loop = Loop(config)
    try:
        second = headnode(config, "scheduler", "run")
        assert second.returncode == 1
        assert "another scheduler loop is running" in second.stderr and f"{loop.proc.pid}@" in second.stderr

        sub = headnode(config, "submit", "--name", "e2e", "-N", "2", "--json", "--", "python", str(tmp_path / "job.py"), "0.3")
        assert sub.returncode == 0, sub.stderr
        assert json.loads(sub.stdout) == {"id": 1, "name": "e2e", "state": "PENDING"}

        follow = headnode(config, "logs", "-f", "e2e")  # returns by itself once the job has ended
        assert follow.returncode == 0, follow.stderr
        node_of = rank_nodes(follow.stdout)
        assert sorted(node_of) == [0, 1] and sorted(node_of.values()) == [0, 1]
        assert sorted(line for line in follow.stdout.splitlines() if "hello" in line) == sorted(
            f"[node {node_of[r]} rank {r}] hello {i} from rank {r}" for r in (0, 1) for i in (0, 1)
        )
        done = headnode(config, "wait", "e2e", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("job 1 SUCCEEDED: ")

        doc = json.loads(headnode(config, "show", "e2e", "--json").stdout)
        nodes = [(n["host"], n["node_rank"], n["exit_code"]) for n in doc["nodes"]]
        assert nodes == [("l0", 0, 0), ("l1", 1, 0)]
        assert len({n["port"] for n in doc["nodes"]}) == 1
        assert headnode(config, "logs", "e2e", "--rank", "1").stdout == "".join(
            f"[node {node_of[1]} rank 1] hello {i} from rank 1\n" for i in (0, 1)
        )
    finally:
        rc, err = loop.stop()
    assert rc == 0 and "lease released" in err
    assert headnode(config, "scheduler", "status").returncode == 1


def test_cancel_without_a_loop_tears_the_job_down_itself_and_verifies(config, tmp_path):
    loop = Loop(config)
    try:
        assert headnode(config, "submit", "--name", "long", "-N", "2", "--", "python", str(tmp_path / "job.py"), "300").returncode == 0
        wait_state(config, "long", "RUNNING")
    finally:
        loop.stop()  # the job keeps running without a loop
    deadline = time.monotonic() + 30
    while len(marked(1, tmp_path)) < 2 and time.monotonic() < deadline:  # both nodes' processes exist
        time.sleep(0.1)
    assert marked(1, tmp_path)

    cancel = headnode(config, "cancel", "long")
    assert cancel.returncode == 0, cancel.stderr
    assert "no scheduler loop is running; stopping job 1 from here" in cancel.stderr
    assert cancel.stdout.startswith("job 1 cancelled; verified: no process left on l0, l1")
    assert marked(1, tmp_path) == []
    assert headnode(config, "wait", "long").returncode == 1

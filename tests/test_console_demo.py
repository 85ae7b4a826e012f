"""`headnode demo --no-console` on a fresh directory: dataset, 2-process CPU run, sample, exit 0."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.store import Store


@pytest.mark.slow
def test_demo_headless_trains_on_this_machine_and_ends_with_a_sample(tmp_path):
    # The embedded default as a file, but for the rendezvous port: other tests on this machine run
    # their own stores, whose jobs also start at 29500 on localhost.
    port = random.Random().randrange(40000, 60000, 100)
    (tmp_path / "hosts.toml").write_text(
        f'[[hosts]]\nname = "localhost"\naddress = "localhost"\npython = {json.dumps(sys.executable)}\n'
        f"[scheduler]\nport_range = [{port}, {port + 99}]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HEADNODE_CONFIG", "HEADNODE_STATE_DIR")}
    r = subprocess.run([sys.executable, "-m", "scheduler", "demo", "--no-console", "--steps", "30"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "job 1 SUCCEEDED" in r.stdout
    assert "a sample from the trained model, prompted with 'def '" in r.stdout
    with Store.for_state_dir(tmp_path / ".headnode") as store:
        job = store.one("SELECT * FROM jobs WHERE id = 1")
        nodes = store.query("SELECT * FROM job_nodes WHERE job_id = 1")
    assert (job["state"], job["data"].split("@")[0], [n["exit_code"] for n in nodes]) == ("SUCCEEDED", "demo-stdlib", [0])
    start = json.loads((Path(nodes[0]["run_dir"]) / "metrics.jsonl").read_text().splitlines()[0])
    assert (start["event"], start["world_size"], start["device"]) == ("start", 2, "cpu")  # two processes trained


def test_demo_refuses_an_inventory_with_remote_hosts(tmp_path):
    (tmp_path / "hosts.toml").write_text('[[hosts]]\nname = "gpu01"\naddress = "10.9.9.9"\n')
    r = subprocess.run([sys.executable, "-m", "scheduler", "demo", "--no-console"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "HEADNODE_CONFIG"})
    assert r.returncode == 2
    assert r.stderr.startswith("headnode: headnode demo runs on this machine alone")

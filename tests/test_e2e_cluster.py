"""The whole product on the namespace cluster, through the real CLI: prepare a dataset, ship it, train
the real GPT across two SSH hosts under the scheduler's torchrun, and read the run back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.store import Store
from tests.support import scheduler, wait_state
from tests.test_data_launch import FAST, STDLIB, cli

pytestmark = pytest.mark.slow

STEPS = 8
TRAIN = ["python", "-m", "trainer", "--model", "tiny", "--seq-len", "64", "--batch-size", "4", "--threads", "1",
         "--max-steps", str(STEPS), "--eval-every", "4", "--ckpt-every", "4", "--warmup-steps", "2"]


def test_the_trainer_runs_across_two_ssh_hosts_on_the_synced_dataset_and_its_metrics_reach_the_store(cluster_config, capsys):
    cluster_config.write_text(cluster_config.read_text() + FAST)
    cfg = ["--config", str(cluster_config)]
    code, made = cli(capsys, "data", "prepare", str(STDLIB / "json"), "--name", "py", "--json", *cfg)
    assert code == 0
    code, synced = cli(capsys, "data", "sync", "py", "node0", "node1", "--json", *cfg)
    assert code == 0 and {r["state"] for r in synced} == {"verified"}

    inv = inventory.load(cluster_config)
    with Store.for_state_dir(inv.state_dir) as store, scheduler(cluster_config):
        code, job = cli(capsys, "submit", "--nodes", "2", "--data", "py", "--name", "gpt", "--json", *cfg, "--", *TRAIN)
        assert code == 0
        row = wait_state(store, job["id"], timeout=240)
    assert row["state"] == "SUCCEEDED", row["reason"]

    code, shown = cli(capsys, "show", "gpt", "--json", *cfg)
    assert shown["data"] == f"py@{made['version']}"
    assert sorted(n["host"] for n in shown["nodes"]) == ["node0", "node1"]
    assert [n["exit_code"] for n in shown["nodes"]] == [0, 0]
    metrics = shown["metrics"]
    assert metrics is not None and math.isfinite(metrics["loss"])
    assert metrics["step"] == STEPS and metrics["tokens_per_s"] > 0

    # Both hosts ran the trainer on their own copy, and each keeps the final checkpoint (per-host run dirs).
    dirs = {n["host"]: n["run_dir"] for n in shown["nodes"]}
    for name in ("node0", "node1"):
        run_dir = Path(dirs[name])
        assert run_dir.parent.name == cli(capsys, "store", "show", "--json", *cfg)[1]["store_id"]  # runs/STORE/JOB
        assert (run_dir / "checkpoints" / f"step-{STEPS:08d}").is_dir(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    code, logs = cli(capsys, "logs", "gpt", *cfg)
    assert code == 0 and "[node 0" in logs and "[node 1" in logs

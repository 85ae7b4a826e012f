"""The whole data path through the real CLI on the namespace cluster: prepare, sync, a corrupted
copy found by verify, a `--data` job placed only where the copy is verified, lineage both ways."""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.cli import main
from scheduler.store import Store
from tests.support import scheduler, wait_state

pytestmark = pytest.mark.slow

STDLIB = Path(sysconfig.get_paths()["stdlib"])
FAST = "\n[scheduler]\ncycle_interval = 0.3\ngrace_period = 3\nlease_ttl = 4\n"
SHOW_DATA = "import os; d = os.environ['HEADNODE_DATA']; print('data at', d, os.path.isfile(os.path.join(d, 'manifest.json')))"


def cli(capsys, *argv: str) -> tuple[int, dict | list | str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in argv else out


def test_a_data_job_runs_only_where_the_copy_is_verified(cluster_config, capsys):
    cluster_config.write_text(cluster_config.read_text() + FAST)
    cfg = ["--config", str(cluster_config)]
    code, made = cli(capsys, "data", "prepare", str(STDLIB / "json"), "--name", "py", "--shard-tokens", "8192", "--json", *cfg)
    assert code == 0 and made["new"]
    ref = f"py@{made['version']}"
    code, synced = cli(capsys, "data", "sync", "py", "--json", *cfg)
    assert code == 0 and {r["state"] for r in synced} == {"verified"}

    inv = inventory.load(cluster_config)
    shard = Path(inv.host("node1").workdir) / "data" / "py" / made["version"] / "train-00001.bin"
    with open(shard, "r+b") as f:
        f.write(b"\xff\xff")
    code, checked = cli(capsys, "data", "verify", ref, "--json", *cfg)
    assert code == 1
    assert {r["host"]: r["bad"] for r in checked} == {"node0": {}, "node1": {"train-00001.bin": "hash mismatch"}, "node2": {}}

    with Store.for_state_dir(inv.state_dir) as store, scheduler(cluster_config):
        code, job = cli(capsys, "submit", "--nodes", "2", "--data", "py", "--json", *cfg, "--", sys.executable, "-c", SHOW_DATA)
        row = wait_state(store, job["id"])
    assert row["state"] == "SUCCEEDED", row["reason"]
    code, shown = cli(capsys, "show", str(job["id"]), "--json", *cfg)
    assert shown["data"] == ref and sorted(n["host"] for n in shown["nodes"]) == ["node0", "node2"]
    code, out = cli(capsys, "logs", str(job["id"]), *cfg)
    for host in ("node0", "node2"):
        assert f"data at {inv.host(host).workdir}/data/py/{made['version']} True" in out

    code, data = cli(capsys, "data", "show", ref, "--json", *cfg)
    assert [r["id"] for r in data["runs"]] == [job["id"]]
    assert [(p["host"], p["state"]) for p in data["placements"]] == [("node0", "verified"), ("node1", "corrupt"), ("node2", "verified")]

    code, healed = cli(capsys, "data", "sync", ref, "node1", "--json", *cfg)
    assert code == 0, healed
    assert [(r["host"], r["state"], r["sent"]) for r in healed] == [("node1", "verified", ["train-00001.bin"])]

"""sync, verify and prune against real SSH hosts in network namespaces (tests/cluster.py).

The hosts share this machine's filesystem, so a test damages a host's copy by writing the file directly.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.data import prepare as prep
from scheduler.data.prune import prune
from scheduler.data.sync import sync
from scheduler.data.verify import verify
from scheduler.data.versions import preflight, resolve
from scheduler.errors import UserError
from scheduler.execute import Executor
from scheduler.store import Store

STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture
def env(cluster_config):
    inv = inventory.load(str(cluster_config))
    with Store.for_state_dir(inv.state_dir) as store, Executor(inv) as ex:
        r = prep.prepare(store, [str(STDLIB / "json")], "py", shard_tokens=8192)
        yield inv, store, ex, resolve(store, f"py@{r.version}")


def copy_on(inv, host: str, row: dict) -> Path:
    return Path(inv.host(host).workdir) / "data" / row["name"] / row["version"]


def flip_byte(path: Path, offset: int = 100) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def states(results) -> dict[str, str]:
    return {r.host: r.state for r in results}


def test_verify_finds_exactly_the_host_and_shard_with_a_flipped_byte_and_resync_heals_it(env):
    inv, store, ex, row = env
    hosts = list(inv.hosts)
    synced = sync(store, ex, hosts, row)
    assert states(synced) == {"node0": "verified", "node1": "verified", "node2": "verified"}
    files = sorted(p.name for p in Path(row["path"]).iterdir())
    for h in hosts:
        there = copy_on(inv, h.name, row)
        assert sorted(p.name for p in there.iterdir() if not p.name.startswith(".")) == files
        assert all((there / f).read_bytes() == (Path(row["path"]) / f).read_bytes() for f in files)

    flip_byte(copy_on(inv, "node1", row) / "train-00002.bin")
    checked = verify(store, ex, hosts, row)
    assert {r.host: (r.state, r.bad) for r in checked} == {
        "node0": ("verified", {}),
        "node1": ("corrupt", {"train-00002.bin": "hash mismatch"}),
        "node2": ("verified", {}),
    }
    assert preflight(store, "py", row["version"]) == {"node0": "verified", "node1": "corrupt", "node2": "verified"}

    healed = sync(store, ex, hosts, row)
    assert {r.host: (r.state, r.sent) for r in healed} == {
        "node0": ("verified", []),
        "node1": ("verified", ["train-00002.bin"]),
        "node2": ("verified", []),
    }
    assert set(preflight(store, "py", row["version"]).values()) == {"verified"}


def test_syncing_an_unchanged_version_moves_no_data(env):
    inv, store, ex, row = env
    sync(store, ex, list(inv.hosts), row)
    again = sync(store, ex, list(inv.hosts), row)
    assert [(r.sent, r.bytes_sent, r.state) for r in again] == [([], 0, "verified")] * 3


def test_a_missing_shard_is_found_and_the_host_is_not_verified(env):
    inv, store, ex, row = env
    sync(store, ex, [inv.host("node2")], row)
    (copy_on(inv, "node2", row) / "val-00000.bin").unlink()
    [r] = verify(store, ex, [inv.host("node2")], row)
    assert (r.state, r.bad) == ("corrupt", {"val-00000.bin": "missing"})
    [never] = verify(store, ex, [inv.host("node0")], row)
    assert (never.state, never.detail) == ("absent", "no copy")


def test_an_interrupted_sync_resumes_without_resending_completed_shards(env):
    inv, store, ex, row = env
    node0 = inv.host("node0")
    landed = []

    def cut_after_two(host, file):
        landed.append(file)
        if len(landed) == 2:
            raise ConnectionResetError("link cut")

    with pytest.raises(ConnectionResetError):
        sync(store, ex, [node0], row, transport="sftp", on_sent=cut_after_two)
    assert preflight(store, "py", row["version"]) == {"node0": "absent"}
    [resumed] = sync(store, ex, [node0], row, transport="sftp")
    assert resumed.state == "verified" and resumed.kept == 2
    assert not set(resumed.sent) & set(landed) and len(resumed.sent) + 2 == len(list(Path(row["path"]).iterdir()))


def test_rsync_replaces_a_damaged_shard_that_kept_its_size_and_mtime(env):
    inv, store, ex, row = env
    node0 = inv.host("node0")
    sync(store, ex, [node0], row, transport="rsync")
    shard = copy_on(inv, "node0", row) / "train-00001.bin"
    st = shard.stat()
    flip_byte(shard)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot leaves no trace in the metadata
    [checked] = verify(store, ex, [node0], row)
    assert checked.bad == {"train-00001.bin": "hash mismatch"}
    [healed] = sync(store, ex, [node0], row, transport="rsync")
    assert (healed.state, healed.sent) == ("verified", ["train-00001.bin"])


def test_rsync_sends_only_the_shards_a_host_lacks(env):
    inv, store, ex, row = env
    there = copy_on(inv, "node1", row)
    there.mkdir(parents=True)
    for f in ("train-00000.bin", "train-00001.bin"):
        shutil.copyfile(Path(row["path"]) / f, there / f)
    (there / "train-00002.bin").write_bytes(b"half a shard")  # as a sync cut mid-file would leave it
    [r] = sync(store, ex, [inv.host("node1")], row, transport="rsync")
    assert (r.transport, r.state, r.kept) == ("rsync", "verified", 2)
    assert "train-00000.bin" not in r.sent and "train-00002.bin" in r.sent


def test_a_host_that_stops_answering_is_reported_and_keeps_its_recorded_state(env, cluster):
    inv, store, ex, row = env
    sync(store, ex, [inv.host("node2")], row)
    ex.connect_timeout = 1.0
    ex.drop(inv.host("node2"))
    cluster.cut("node2")
    try:
        [r] = verify(store, ex, [inv.host("node2")], row)
    finally:
        cluster.heal("node2")
    assert r.state == "unreachable" and "unreachable" in r.detail
    assert preflight(store, "py", row["version"]) == {"node2": "verified"}


def test_prune_removes_old_versions_from_hosts_but_never_one_a_live_job_uses(env, tmp_path):
    inv, store, ex, old = env
    extra = tmp_path / "extra.txt"
    extra.write_text("one more document makes a new version")
    new = resolve(store, "py@" + prep.prepare(store, [str(STDLIB / "json"), str(extra)], "py").version)
    node0 = inv.host("node0")
    sync(store, ex, [node0], old)
    sync(store, ex, [node0], new)
    with store.tx():
        store.execute(
            "INSERT INTO jobs (name, state, command, nodes, gpus_per_node, data, submitted_at) VALUES ('t', 'RUNNING', '[]', 1, 0, ?, 0)",
            (f"py@{old['version']}",),
        )
    with pytest.raises(UserError, match=f"py@{old['version']} is in use by live job 1"):
        prune(store, ex, [node0], f"py@{old['version']}")
    assert prune(store, ex, [node0], "py", keep=1) == [
        {"name": "py", "version": old["version"], "host": "node0", "removed": False, "kept": "in use by live job 1", "error": None}
    ]
    with store.tx():
        store.execute("UPDATE jobs SET state = 'SUCCEEDED'")
    assert [r["removed"] for r in prune(store, ex, [node0], "py", keep=1)] == [True]
    assert not copy_on(inv, "node0", old).exists() and copy_on(inv, "node0", new).exists()
    assert preflight(store, "py", old["version"]) == {}

"""Two names per host, on the namespace cluster: a host that SSH reaches only by an ssh config alias
through a ProxyJump gateway, while its ranks meet the others' on the cluster network.

`cluster.behind` gives the second host an address (and an sshd) that only the first can reach, so the
head cannot talk to it but through the gateway. The ssh config is a file of the test's own, named by
`ssh_config` in hosts.toml: the real ~/.ssh is never read or touched.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.cli import main
from scheduler.store import Store
from tests.support import scheduler, wait_state

pytestmark = pytest.mark.slow

ALIAS = "alias-b"
FAST = "\n[scheduler]\ncycle_interval = 0.3\ngrace_period = 3\nlease_ttl = 4\nnode_lost_timeout = 6\n"

# Every rank: a gloo all-reduce over the gang, then one line saying whether the hidden address is
# one of its host's own (it is only on the hidden host).
RANK = """
import os, socket, sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(t)
s = socket.socket()
try:
    s.bind((sys.argv[1], 0))
    here = "here"
except OSError:
    here = "elsewhere"
print(f"rank {dist.get_rank()} sum {t.item():g} host {os.environ['HEADNODE_HOST']} hidden address {here}", flush=True)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)
"""


@pytest.fixture
def bastion(cluster):
    """(gateway, hidden host, the hidden host's address behind the gateway)."""
    gw, hidden = cluster.hosts[0], cluster.hosts[1]
    with cluster.behind(hidden.name, gw.name) as private:
        yield gw, hidden, private


def write(cluster, tmp_path: Path, gw, private: str, *, known: str) -> Path:
    """hosts.toml with the gateway by its IP and the hidden host by alias only, and the ssh config
    that says how to reach the alias. No IdentityFile in it: hosts.toml's identity_file serves the
    gateway too."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host {ALIAS}\n    HostName {private}\n    User root\n    ProxyJump root@{gw.address}\n")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known)
    lines = [
        "[cluster]", 'name = "names"', f"state_dir = {json.dumps(str(tmp_path / 'state'))}", "",
        "[defaults]", 'user = "root"', f"python = {json.dumps(sys.executable)}",
        f"identity_file = {json.dumps(str(cluster.client_key))}", f"known_hosts = {json.dumps(str(known_hosts))}",
        'network_interface = "eth0"', f"ssh_config = {json.dumps(str(ssh_config))}",
    ]
    for name, address in ((ALIAS, ALIAS), (gw.name, gw.address)):
        workdir = tmp_path / "hosts" / name
        workdir.mkdir(parents=True)
        lines += ["", "[[hosts]]", f"name = {json.dumps(name)}", f"address = {json.dumps(address)}",
                  f"workdir = {json.dumps(str(workdir))}", "gpus = 0"]
    config = tmp_path / "hosts.toml"
    config.write_text("\n".join(lines) + "\n" + FAST)
    return config


def known_for(cluster, hidden, private: str, *, gateway: bool = True, target: bool = True) -> str:
    lines = cluster.known_hosts.read_text().splitlines(True)
    text = "".join(line for line in lines if gateway or not line.startswith(f"{cluster.hosts[0].address} "))
    return text + (cluster.known_hosts_line(hidden.name, private) if target else "")


def cli_json(capsys, *argv: str):
    capsys.readouterr()
    cut = argv.index("--") if "--" in argv else len(argv)
    code = main([*argv[:cut], "--json", *argv[cut:]])
    return code, json.loads(capsys.readouterr().out)


def test_the_head_cannot_reach_the_hidden_host_directly(bastion):
    _, _, private = bastion
    with pytest.raises(OSError):
        socket.create_connection((private, 22), timeout=5).close()


def test_an_alias_host_behind_a_proxyjump_probes_ok_and_runs_a_two_host_job_to_succeeded(cluster, bastion, tmp_path, capsys):
    gw, hidden, private = bastion
    config = write(cluster, tmp_path, gw, private, known=known_for(cluster, hidden, private))
    behind_log = hidden.workdir.parent / "sshd-behind.log"
    direct_log_size = hidden.sshd_log.stat().st_size

    code, entries = cli_json(capsys, "hosts", "probe", "--config", str(config))
    assert code == 0, entries
    assert [(e["name"], e["ok"], e["rdzv_address"]) for e in entries] == [(ALIAS, True, hidden.address), (gw.name, True, gw.address)]
    _, rows = cli_json(capsys, "hosts", "--config", str(config))
    assert [(r["name"], r["address"], r["rdzv_address"], r["rdzv_from"]) for r in rows] == [
        (ALIAS, ALIAS, hidden.address, "hosts probe (its eth0)"),
        (gw.name, gw.address, gw.address, "hosts probe (its eth0)"),
    ]  # fmt: skip

    with Store.for_state_dir(inventory.load(config).state_dir) as store, scheduler(config):
        _, job = cli_json(capsys, "submit", "--config", str(config), "--nodes", "2", "--gpus-per-node", "0",
                          "--", sys.executable, "-c", RANK, private)
        row = wait_state(store, job["id"], {"SUCCEEDED", "FAILED"})
        assert row["state"] == "SUCCEEDED", row["reason"]
        starting = store.one("SELECT reason FROM events WHERE object = ? AND what = 'STARTING'", (f"job:{job['id']}",))

    # The alias host is node 0 (first by name): every rank met on its cluster-network address.
    assert starting["reason"].endswith(f", rendezvous {hidden.address}:29500"), starting["reason"]
    capsys.readouterr()
    assert main(["logs", str(job["id"]), "--config", str(config)]) == 0
    # torchrun's c10d rendezvous numbers the ranks in the order the nodes join: either may be rank 0.
    facts = sorted(re.sub(r"rank \d", "rank R", line) for line in capsys.readouterr().out.splitlines() if " sum " in line)
    assert facts == [
        f"[node 0 rank R] rank R sum 3 host {ALIAS} hidden address here",
        f"[node 1 rank R] rank R sum 3 host {gw.name} hidden address elsewhere",
    ], facts
    # Every SSH session of the hidden host came through the gateway's end of the private link, none
    # from this machine to its bridge address.
    accepted = [line for line in behind_log.read_text().splitlines() if "Accepted publickey" in line]
    assert accepted and all(f" from {cluster.subnet[200]} " in line for line in accepted), accepted
    assert "Accepted" not in hidden.sshd_log.read_text()[direct_log_size:]


def test_a_missing_gateway_key_names_the_gateway_and_its_keyscan_which_fixes_it(cluster, bastion, tmp_path, capsys):
    gw, hidden, private = bastion
    config = write(cluster, tmp_path, gw, private, known=known_for(cluster, hidden, private, gateway=False))
    known = tmp_path / "known_hosts"

    code, entries = cli_json(capsys, "hosts", "probe", ALIAS, "--config", str(config))

    assert code == 1
    assert entries[0]["reason"] == (
        f"host key unknown for the ProxyJump gateway {gw.address}:22 on the way to {ALIAS}: it is not in {known};"
        f" to trust the gateway, check its fingerprint and run `ssh-keyscan {gw.address} >> {known}`"
    )
    subprocess.run(f"ssh-keyscan {gw.address} >> {known}", shell=True, check=True, capture_output=True, timeout=30)
    code, entries = cli_json(capsys, "hosts", "probe", ALIAS, "--config", str(config))
    assert (code, entries[0]["ok"]) == (0, True), entries


def test_a_missing_key_of_the_host_behind_the_gateway_is_scanned_through_the_gateway(cluster, bastion, tmp_path, capsys):
    gw, hidden, private = bastion
    config = write(cluster, tmp_path, gw, private, known=known_for(cluster, hidden, private, target=False))
    known, ssh_config = tmp_path / "known_hosts", tmp_path / "ssh_config"

    code, entries = cli_json(capsys, "hosts", "probe", ALIAS, "--config", str(config))

    assert code == 1
    fix = (f"ssh -F {ssh_config} -i {cluster.client_key} -o UserKnownHostsFile={known} root@{gw.address}"
           f" ssh-keyscan {private} >> {known}")
    assert entries[0]["reason"] == (
        f"host key unknown for {ALIAS} ({private}:22), reached through the ProxyJump gateway {gw.address}: it is not in"
        f" {known}; to trust this host, check its fingerprint and run `{fix}`"
    )
    subprocess.run(fix, shell=True, check=True, capture_output=True, timeout=30)
    code, entries = cli_json(capsys, "hosts", "probe", ALIAS, "--config", str(config))
    assert (code, entries[0]["ok"]) == (0, True), entries

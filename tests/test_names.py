"""Two names per host, without hosts: where SSH goes (`address`, maybe an ssh config alias) and where
ranks meet (`rdzv_address`, learned by probe, or the SSH destination when it is an address), and
the sentences for a connection that fails at a ProxyJump gateway or behind one.

The real thing (an alias host behind a real gateway running a real two-host job) is in
test_names_cluster.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import paramiko
import pytest

from scheduler import hosts, inventory, launch, loop, rendezvous
from scheduler.errors import ConfigError
from scheduler.execute import ConnectFailed, Executor, Hop, Result, Route, connect_error
from scheduler.inventory import Host
from scheduler.store import Store

PY = json.dumps(sys.executable)


def write(tmp_path: Path, hosts_text: str, *, defaults: str = "") -> Path:
    path = tmp_path / "hosts.toml"
    path.write_text(f"[cluster]\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n[defaults]\n{defaults}\n{hosts_text}")
    return path


# --- hosts.toml ----------------------------------------------------------------------------------------


def test_rdzv_address_and_ssh_config_are_read_per_host(tmp_path):
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host alias-b\n    HostName 10.9.0.2\n")
    inv = inventory.load(write(
        tmp_path,
        "[[hosts]]\nname = 'b'\naddress = 'alias-b'\nrdzv_address = '10.1.0.2'\n"
        "[[hosts]]\nname = 'c'\naddress = 'c.lab.example'\nrdzv_address = 'c.cluster.example'\n",
        defaults="ssh_config = 'ssh_config'",
    ))  # fmt: skip
    assert [(h.rdzv_address, h.ssh_config) for h in inv.hosts] == [
        ("10.1.0.2", str(ssh_config)), ("c.cluster.example", str(ssh_config)),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "hosts_text, defaults, expected",
    [
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nrdzv_address = 'not an address'\n", "",
         "hosts.toml:8: host 'a': rdzv_address 'not an address' is not an IP address or DNS name"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nrdzv_address = 7\n", "", "rdzv_address must be a string, not 7"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\n", "rdzv_address = '10.0.0.1'",
         "hosts.toml:4: [defaults]: rdzv_address is one host's own address, not a default for all"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nrdzv_address = '10.0.0.1'\n[[hosts]]\nname = 'b'\naddress = 'y'\n"
         "rdzv_address = '10.0.0.1'\n", "", "hosts.toml:12: host 'b': duplicate rdzv_address 10.0.0.1 (also host 'a')"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nrdzv_address = '127.0.0.1'\n", "",
         "host 'a': rdzv_address 127.0.0.1 is a loopback address: the other hosts' ranks cannot reach it"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nssh_config = 'nope'\n", "", "hosts.toml:8: host 'a': ssh_config"),
    ],
)  # fmt: skip
def test_bad_rendezvous_and_ssh_config_keys_are_rejected_with_file_line_and_fix(tmp_path, hosts_text, defaults, expected):
    with pytest.raises(ConfigError) as e:
        inventory.load(write(tmp_path, hosts_text, defaults=defaults))
    assert expected in str(e.value)
    assert str(e.value).endswith(".")


# --- where ranks meet ------------------------------------------------------------------------------------


def host(address: str, **kw) -> Host:
    return Host(name=kw.pop("name", "h"), address=address, **kw)


def no_config(_host):
    return {"hostname": _host.address}


def test_the_rendezvous_address_is_the_configured_then_the_probed_then_the_ssh_destination_never_an_alias():
    aliases = {"alias-ip": {"hostname": "10.9.0.2", "proxyjump": "gw"}, "alias-dns": {"hostname": "b.lab.example"}}

    def lookup(h):
        return aliases.get(h.address, {"hostname": h.address})

    def resolves(name):
        return name == "b.lab.example"

    probe = {"address": "alias-x", "network_interface": "eth1", "rdzv_address": "10.1.0.7"}
    cases = [
        (host("alias-x", rdzv_address="10.1.0.9"), probe, "10.1.0.9", "rdzv_address in hosts.toml"),
        (host("alias-x", network_interface="eth1"), probe, "10.1.0.7", "hosts probe (its eth1)"),
        (host("alias-x"), {**probe, "network_interface": None}, "10.1.0.7", "hosts probe (its SSH connection)"),
        (host("alias-x", network_interface="eth0"), probe, None, "none known"),  # probed for another interface
        (host("alias-y", network_interface="eth1"), probe, None, "none known"),  # probed at another address
        (host("10.0.0.5"), None, "10.0.0.5", "SSH address"),
        (host("alias-ip"), None, "10.9.0.2", "HostName in the ssh config"),
        (host("alias-dns"), None, "b.lab.example", "HostName in the ssh config"),
        (host("b.lab.example"), None, "b.lab.example", "SSH address (resolved here)"),
        (host("alias-x"), None, None, "none known"),
        (host("localhost"), None, "127.0.0.1", "localhost"),
    ]
    got = [rendezvous.resolve(h, p, lookup=lookup, resolves=resolves) for h, p, _, _ in cases]
    assert [(m.address, m.source) for m in got] == [(a, s) for _, _, a, s in cases]


def test_an_unreadable_ssh_config_leaves_an_alias_without_an_address():
    def broken(_host):
        raise OSError("unreadable")

    assert rendezvous.resolve(host("alias-x"), lookup=broken, resolves=lambda n: True).address is None


def test_torchrun_never_gets_an_ssh_alias_and_an_ipv6_endpoint_is_bracketed():
    with pytest.raises(ValueError, match="no rendezvous address"):
        launch.address(host("alias-b"))
    assert launch.address(host("alias-b", rdzv_address="10.1.0.2")) == "10.1.0.2"
    assert launch.address(host("10.0.0.3")) == "10.0.0.3"
    spec = launch.NodeSpec(
        job_id=1, attempt=1, node_rank=1, nnodes=2, host=host("alias-b", rdzv_address="fd00::2"), gpus=(), port=29500,
        endpoint="fd00::1", command=("true",),
    )  # fmt: skip
    argv = launch.torchrun_argv(spec)
    assert argv[argv.index("--rdzv-endpoint") + 1] == "[fd00::1]:29500"
    assert argv[argv.index("--local-addr") + 1] == "fd00::2"


# --- the loop: a job waits for an address, then meets on it -----------------------------------------------


@pytest.fixture
def alias_inv(tmp_path):
    """Two hosts the loop never has to reach to plan: one by IP, one by an alias no one resolves."""
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host alias-b\n    ProxyJump root@10.213.254.10\n")
    path = write(tmp_path, (
        "[[hosts]]\nname = 'a'\naddress = '10.213.254.10'\ngpus = 0\n"
        "[[hosts]]\nname = 'b'\naddress = 'alias-b'\ngpus = 0\n"
    ), defaults=f"ssh_config = 'ssh_config'\nnetwork_interface = 'eth0'\npython = {PY}")  # fmt: skip
    return inventory.load(path)


@pytest.fixture
def sched(alias_inv, monkeypatch):
    # No name resolves: and no DNS query leaves this machine for `alias-b`.
    monkeypatch.setattr(rendezvous, "resolves_here", lambda name: False)
    with Store.for_state_dir(alias_inv.state_dir) as store:
        ex = Executor(alias_inv)
        yield loop.Loop(alias_inv, store, ex)
        ex.close()


def submit(sched, nodes: int) -> int:
    from scheduler import jobs

    return jobs.submit(sched.store, sched.inventory, jobs.JobSpec(command=["true"], nodes=nodes, gpus_per_node=0)).id


def reason(sched, job_id: int) -> str:
    return sched.store.one("SELECT reason FROM jobs WHERE id = ?", (job_id,))["reason"]


def probed(sched, name: str, address: str) -> None:
    h = sched.inventory.host(name)
    facts = {"python": "3.11", "torch": "2.13", "gpus": [], "interface": {"name": "eth0", "address": address}}
    entry = hosts.interpret(h, Result(name, True, 0, json.dumps(facts), "", None, 0.1))
    hosts.record_probe(sched.store, sched.inventory, [entry])


def test_a_two_host_job_with_an_unresolvable_alias_waits_saying_why_then_meets_on_the_probed_address(sched):
    job_id = submit(sched, 2)

    assert sched.plan() == []
    assert reason(sched, job_id) == (
        "waiting for a rendezvous address: b has none that the other hosts' ranks could reach (an SSH alias is not"
        " one); set rdzv_address for it in hosts.toml, or run `headnode hosts probe` to learn it on the host (from"
        " network_interface)"
    )
    assert sched.plan() == [] and reason(sched, job_id).startswith(rendezvous.WAITING_PREFIX)  # said once, kept

    probed(sched, "b", "10.1.0.2")
    placed = sched.plan()
    assert [(n.host, n.node_rank) for p in placed for n in p.nodes] == [("a", 0), ("b", 1)]
    assert reason(sched, job_id) == "waiting for resources"  # taken back
    meeting = sched._meeting_hosts([sched.inventory.host("a"), sched.inventory.host("b")])
    assert [launch.address(h) for h in meeting] == ["10.213.254.10", "10.1.0.2"]


def test_a_single_node_job_on_an_alias_meets_on_loopback_and_is_not_held_back(sched):
    job_id = submit(sched, 1)
    placed = sched.plan()
    assert [p.job_id for p in placed] == [job_id]
    host_b = sched.inventory.host("b")
    assert [launch.address(h) for h in sched._meeting_hosts([host_b])] == ["127.0.0.1"]


def test_a_retried_jobs_reason_keeps_what_it_said_before_the_note(sched):
    job_id = submit(sched, 2)
    sched.store.execute("UPDATE jobs SET reason = 'attempt 1 ended: boom; retrying as attempt 2' WHERE id = ?", (job_id,))
    sched.plan()
    assert reason(sched, job_id).startswith(f"attempt 1 ended: boom; retrying as attempt 2; {rendezvous.WAITING_PREFIX}: b has")
    probed(sched, "b", "10.1.0.2")
    sched.plan()
    assert reason(sched, job_id) == "attempt 1 ended: boom; retrying as attempt 2"


# --- the probe ---------------------------------------------------------------------------------------------


def probe_entry(h: Host, **facts) -> dict:
    base = {"python": "3.11", "torch": "2.13", "gpus": [], **facts}
    return hosts.interpret(h, Result(h.name, True, 0, json.dumps(base), "", None, 0.1))


def test_the_probe_learns_the_interface_address_else_the_ssh_one_and_a_bad_interface_is_a_reason():
    eth = host("alias-b", name="b", network_interface="eth1")
    ok = probe_entry(eth, interface={"name": "eth1", "address": "10.1.0.2"}, ssh_address="10.9.0.2")
    assert (ok["ok"], ok["rdzv_address"], ok["address"], ok["network_interface"]) == (True, "10.1.0.2", "alias-b", "eth1")
    plain = probe_entry(host("alias-b", name="b"), interface=None, ssh_address="10.9.0.2")
    assert (plain["ok"], plain["rdzv_address"]) == (True, "10.9.0.2")
    missing = probe_entry(eth, interface={"name": "eth1", "address": None, "error": "no such interface", "interfaces": ["eth0", "lo"]})
    assert (missing["ok"], missing["rdzv_address"]) == (False, None)
    assert missing["reason"] == (
        "network_interface eth1 on b: no such interface (it has eth0, lo); set network_interface in hosts.toml to"
        " the interface of the cluster network (or rdzv_address to the address ranks should meet on)"
    )
    loopback = probe_entry(eth, interface={"name": "eth1", "address": "127.0.0.1"})
    assert not loopback["ok"] and "is the loopback interface" in loopback["reason"]


def test_a_host_that_does_not_answer_a_probe_keeps_the_address_it_gave_last(sched):
    probed(sched, "b", "10.1.0.2")
    b = sched.inventory.host("b")
    down = hosts.interpret(b, Result("b", False, None, "", "", "unreachable: no route", 5.0))
    hosts.record_probe(sched.store, sched.inventory, [down])
    assert rendezvous.meetings(sched.store, sched.inventory)["b"] == rendezvous.Meeting("10.1.0.2", "hosts probe (its eth0)")


# --- connection errors through gateways -----------------------------------------------------------------


GW = Hop("bastion", "203.0.113.5", 2200, "ops")
TARGET = Hop("alias-b", "10.9.0.2", 22, "root")


def sentence(exc: BaseException, failed: int, **host_kw) -> str:
    h = host("alias-b", name="b", known_hosts="/k", **host_kw)
    return connect_error(h, ConnectFailed(exc, Route((GW, TARGET), failed, jumps=("ops@bastion:2200",))), 5)


def test_a_missing_gateway_key_names_the_gateway_with_a_keyscan_of_its_real_hostname_and_port():
    assert sentence(paramiko.SSHException("Server '[203.0.113.5]:2200' not found in known_hosts"), 0) == (
        "host key unknown for the ProxyJump gateway bastion (203.0.113.5:2200) on the way to alias-b: it is not in /k;"
        " to trust the gateway, check its fingerprint and run `ssh-keyscan -p 2200 203.0.113.5 >> /k`"
    )


def test_a_missing_key_behind_the_gateway_is_scanned_by_the_gateway():
    text = sentence(paramiko.SSHException("Server '10.9.0.2' not found in known_hosts"), 1, ssh_config="/c", identity_file="/id")
    assert text == (
        "host key unknown for alias-b (10.9.0.2:22), reached through the ProxyJump gateway bastion: it is not in /k;"
        " to trust this host, check its fingerprint and run"
        " `ssh -F /c -i /id -o UserKnownHostsFile=/k ops@bastion:2200 ssh-keyscan 10.9.0.2 >> /k`"
    )


def test_a_changed_gateway_key_is_removed_by_its_known_hosts_name():
    err = paramiko.BadHostKeyException("[203.0.113.5]:2200", _FakeKey(), _FakeKey())
    assert "`ssh-keygen -R '[203.0.113.5]:2200' -f /k`" in sentence(err, 0)
    assert sentence(err, 0).startswith("host key changed for the ProxyJump gateway bastion (203.0.113.5:2200) on the way to alias-b")


def test_a_gateway_that_cannot_reach_the_host_says_so_and_authentication_at_the_gateway_points_at_the_ssh_config():
    assert sentence(paramiko.ChannelException(2, "Connect failed"), 1) == (
        "unreachable: the ProxyJump gateway bastion could not connect to alias-b (10.9.0.2:22) (Connect failed; is it"
        " up, and is that address right for the gateway?)"
    )
    assert sentence(paramiko.SSHException("Timeout opening channel."), 1).startswith(
        "unreachable: the ProxyJump gateway bastion did not connect to alias-b (10.9.0.2:22) within 5 s"
    )
    assert sentence(paramiko.AuthenticationException("Authentication failed."), 0) == (
        "authentication refused by the ProxyJump gateway bastion (203.0.113.5:2200) on the way to alias-b for user ops:"
        " set User and IdentityFile for bastion in the ssh config, or load its key into ssh-agent"
    )


def test_a_direct_host_keeps_its_old_sentence_and_an_alias_names_its_hostname_and_port():
    direct = host("10.0.0.1", known_hosts="/k")
    assert connect_error(direct, paramiko.SSHException("Server '10.0.0.1' not found in known_hosts")) == (
        "host key unknown for 10.0.0.1:22: it is not in /k; to trust this host, check its fingerprint and run"
        " `ssh-keyscan 10.0.0.1 >> /k`"
    )
    alias = ConnectFailed(paramiko.SSHException("not found in known_hosts"), Route((Hop("gpu01", "10.0.0.5", 2222, None),), 0))
    assert connect_error(host("gpu01", known_hosts="/k"), alias).endswith("run `ssh-keyscan -p 2222 10.0.0.5 >> /k`")


def test_an_ssh_config_removed_after_load_is_named_and_nothing_is_tried(tmp_path, alias_inv):
    Path(alias_inv.hosts[1].ssh_config).unlink()
    with Executor(alias_inv) as ex:
        r = ex.run(alias_inv.hosts[1], ["true"])
    assert r.error == (f"cannot read the ssh config {tmp_path / 'ssh_config'} that hosts.toml names for b: it is gone;"
                       " restore it, or drop ssh_config")


class _FakeKey:
    def get_base64(self) -> str:
        return "AAAA"

    def get_name(self) -> str:
        return "ssh-ed25519"

"""`headnode hosts`, `hosts probe` and `drain` against real sshd hosts, through the real CLI."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from scheduler.cli import main
from tests.support import existing_store

HEADNODE = str(Path(sys.executable).with_name("headnode"))  # the installed console script
# The --json fields scripts rely on (DESIGN.md): more may be added, none of these renamed.
HOSTS_FIELDS = {"name", "address", "state", "gpus", "gpus_in_use", "tags"}
PROBE_FIELDS = {"name", "ok", "reason", "python", "torch", "cuda", "driver", "gpus", "disk_free_bytes"}


def run_json(capsys, *argv: str) -> tuple[int, object]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_probe_reports_every_host_ok_with_its_python_and_torch_versions(cluster, cluster_config, capsys):
    code, entries = run_json(capsys, "hosts", "probe", "--config", str(cluster_config))

    assert code == 0
    assert [(e["name"], e["ok"], e["reason"], e["python"], e["torch"]) for e in entries] == [
        (h.name, True, None, platform.python_version(), version("torch")) for h in cluster.hosts
    ]
    assert all(e["disk_free_bytes"] > 0 for e in entries)
    assert all(PROBE_FIELDS <= e.keys() for e in entries)
    _, hosts = run_json(capsys, "hosts", "--config", str(cluster_config))
    assert [(h["name"], h["address"], h["state"], h["gpus"], h["gpus_in_use"]) for h in hosts] == [
        (h.name, h.address, "up", 2, 0) for h in cluster.hosts
    ]
    assert all(HOSTS_FIELDS <= h.keys() for h in hosts)


def test_a_cut_host_is_reported_unreachable_within_its_timeout_while_the_others_stay_ok(
    cluster, cluster_config, capsys
):
    cut = cluster.hosts[-1].name
    cluster.cut(cut)
    try:
        code, entries = run_json(capsys, "hosts", "probe", "--timeout", "5", "--config", str(cluster_config))
    finally:
        cluster.heal(cut)

    assert code == 1
    by_name = {e["name"]: e for e in entries}
    assert [n for n, e in by_name.items() if e["ok"]] == [h.name for h in cluster.hosts[:-1]]
    assert by_name[cut]["reason"].startswith(("unreachable", "timed out"))
    assert by_name[cut]["elapsed_s"] < 5 + 5  # the executor's 5 s connect timeout, plus slack: no hang
    _, hosts = run_json(capsys, "hosts", "--config", str(cluster_config))
    assert {h["name"]: h["state"] for h in hosts}[cut] == "down"

    code, entries = run_json(capsys, "hosts", "probe", cut, "--config", str(cluster_config))
    assert (code, entries[0]["ok"]) == (0, True)  # healed: it answers again


def test_a_host_missing_from_known_hosts_is_refused_with_the_command_that_fixes_it(
    cluster, cluster_config, tmp_path, capsys
):
    stranger = cluster.hosts[1]
    known = tmp_path / "known_hosts"
    known.write_text("".join(line for line in cluster.known_hosts.read_text().splitlines(True)
                             if not line.startswith(f"{stranger.address} ")))
    config = _replace(cluster_config, str(cluster.known_hosts), str(known))

    code = main(["hosts", "probe", stranger.name, "--config", str(config)])

    assert code == 1
    err = capsys.readouterr().err
    assert f"host key unknown for {stranger.address}:22" in err
    assert f"ssh-keyscan {stranger.address} >> {known}" in err


def test_a_host_presenting_another_key_is_refused_as_changed(cluster, cluster_config, tmp_path, capsys):
    a, b = cluster.hosts[0], cluster.hosts[1]
    lines = cluster.known_hosts.read_text().splitlines()
    key_b = next(line.split(" ", 1)[1] for line in lines if line.startswith(f"{b.address} "))
    known = tmp_path / "known_hosts"
    known.write_text(f"{a.address} {key_b}\n")  # a's entry holds b's key: what a MITM looks like
    config = _replace(cluster_config, str(cluster.known_hosts), str(known))

    code, entries = run_json(capsys, "hosts", "probe", a.name, "--config", str(config))

    assert code == 1
    assert entries[0]["reason"].startswith(f"host key changed for {a.address}:22")


def test_drain_survives_a_new_process_and_shows_in_hosts(cluster, cluster_config, capsys):
    name = cluster.hosts[1].name
    assert main(["hosts", "drain", name, "--config", str(cluster_config)]) == 0
    capsys.readouterr()

    r = subprocess.run([HEADNODE, "hosts", "--json", "--config", str(cluster_config)],
                       capture_output=True, text=True, timeout=60)

    assert r.returncode == 0, r.stderr
    assert {h["name"]: h["state"] for h in json.loads(r.stdout)}[name] == "draining"
    r = subprocess.run([HEADNODE, "hosts", "undrain", name, "--config", str(cluster_config)],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"{name}: undrained")
    _, hosts = run_json(capsys, "hosts", "--config", str(cluster_config))
    assert {h["name"]: h["state"] for h in hosts}[name] == "unknown"


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from scheduler import hosts, inventory
    from scheduler.store import Store
    config, name, go = sys.argv[1:]
    inv = inventory.load(config)
    while not Path(go).exists():  # start together: the point is contention
        time.sleep(0.001)
    store = Store.for_state_dir(inv.state_dir, actor=name)
    for i in range(250):  # each toggle reads, then writes the host and an event in one transaction
        assert hosts.set_draining(store, inv, name, draining=(i % 2 == 0))
""")


def test_four_processes_toggling_drain_250_times_each_at_once_lose_no_write(tmp_path):
    names = [f"w{k}" for k in range(4)]
    config = tmp_path / "hosts.toml"
    config.write_text(f"[cluster]\nstate_dir = {json.dumps(str(tmp_path / 'state'))}\n" + "".join(
        f'[[hosts]]\nname = "{n}"\naddress = "localhost"\n' for n in names))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(config), n, str(go)], stderr=subprocess.PIPE,
                              text=True) for n in names]
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors

    from scheduler.store import Store

    store = Store.for_state_dir(tmp_path / "state")
    for n in names:
        whats = [e["what"] for e in store.query("SELECT what FROM events WHERE object = ? ORDER BY id", (f"host:{n}",))]
        assert whats == ["drained", "undrained"] * 125
    assert store.query("SELECT name, draining FROM hosts ORDER BY name") == [{"name": n, "draining": 0} for n in names]


HOSTILE = ["a; touch {p}", "$(touch {p})", "`touch {p}`", "x' && touch '{p}", "a\"; touch {p}; \""]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_names_and_tags_are_rejected_before_anything_runs(cluster_config, tmp_path, capsys, template):
    pwned = tmp_path / "pwned"
    value = template.format(p=pwned)
    edits = {"name": f"name = {json.dumps(value)}", "tags": f'name = "node0"\ntags = {json.dumps([value])}'}
    for key, edit in edits.items():
        config = tmp_path / f"hostile-{key}.toml"
        config.write_text(cluster_config.read_text().replace('name = "node0"', edit, 1))
        assert main(["hosts", "probe", "--config", str(config)]) == 2
        assert "may contain only letters, digits" in capsys.readouterr().err
    for argv in (["hosts", "probe", value], ["hosts", "drain", value]):
        assert main([*argv, "--config", str(cluster_config)]) == 2
        assert "unknown host" in capsys.readouterr().err
    assert not pwned.exists()


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_paths_reach_the_hosts_as_plain_arguments_never_as_shell(cluster, cluster_config, tmp_path, capsys,
                                                                        template):
    # workdir and python are free-form paths, so they do reach remote argv: quoted, they stay inert.
    pwned = tmp_path / "pwned"
    value = template.format(p=pwned)
    text = cluster_config.read_text()
    text = text.replace("[defaults]\n", f"[defaults]\nworkdir = {json.dumps(value)}\n", 1)
    first = f'name = "{cluster.hosts[0].name}"'
    text = text.replace(first, f"{first}\npython = {json.dumps(value)}")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("workdir = \"/"))
    config = tmp_path / "hostile.toml"
    config.write_text(text + "\n")

    code, entries = run_json(capsys, "hosts", "probe", "--config", str(config))

    assert code == 1
    assert entries[0]["reason"].startswith("python missing")  # argv[0] was the whole string
    assert [e["ok"] for e in entries[1:]] == [True] * (len(entries) - 1)  # the hostile workdir was just a path
    assert not pwned.exists()


def _replace(config: Path, old: str, new: str) -> Path:
    out = config.with_name(f"edited-{config.name}")
    out.write_text(config.read_text().replace(old, new))
    return out


REPO = Path(__file__).resolve().parents[1]


def test_a_host_whose_sshd_is_stopped_reads_no_ssh_banner_and_prints_no_traceback(cluster, cluster_config, capsys):
    frozen = cluster.hosts[1]
    env = {k: v for k, v in os.environ.items() if k != "HEADNODE_DEBUG"} | {"PYTHONPATH": str(REPO)}
    existing_store(cluster_config)
    cluster.freeze(frozen.name)
    try:
        r = subprocess.run([sys.executable, "-m", "scheduler", "hosts", "probe", "--timeout", "3", "--json", "--config",
                            str(cluster_config)], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    finally:
        cluster.thaw(frozen.name)

    assert r.returncode == 1, r.stderr
    by_name = {e["name"]: e for e in json.loads(r.stdout)}
    assert by_name[frozen.name]["reason"] == f"no SSH banner from {frozen.address}:22 within 3 s (sshd hung or overloaded?)"
    assert [n for n, e in by_name.items() if e["ok"]] == [h.name for h in cluster.hosts if h != frozen]
    assert "Traceback" not in r.stderr and "paramiko" not in r.stderr
    assert r.stderr == ""
    code, entries = run_json(capsys, "hosts", "probe", frozen.name, "--config", str(cluster_config))
    assert (code, entries[0]["ok"]) == (0, True)  # thawed: it answers again


def test_a_key_the_host_does_not_accept_is_reported_as_refused_authentication(cluster, cluster_config, tmp_path, capsys):
    stranger_key = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger_key)], check=True)
    config = _replace(cluster_config, str(cluster.client_key), str(stranger_key))
    host = cluster.hosts[0]

    code, entries = run_json(capsys, "hosts", "probe", host.name, "--config", str(config))

    assert code == 1
    assert entries[0]["reason"].startswith(f"authentication refused by {host.address}:22 for user root:")

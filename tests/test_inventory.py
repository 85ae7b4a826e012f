"""hosts.toml: what loads, and how every mistake is reported (file, line, fix; never a traceback)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import inventory
from scheduler.errors import ConfigError, UserError

GOOD = """
[cluster]
name = "lab"
state_dir = "state"

[defaults]
user = "train"
python = "/opt/venv/bin/python"
workdir = "/scratch/headnode"
network_interface = "eth0"

[[hosts]]
name = "gpu01"
address = "10.0.0.11"
gpus = 8
tags = ["h100"]

[[hosts]]
name = "gpu02"
address = "10.0.0.12"
user = "other"
port = 2222

[scheduler]
node_lost_timeout = 12
port_range = [30000, 30100]

[telemetry]
interval = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hosts.toml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_apply_to_every_host_and_hosts_override_them(tmp_path):
    inv = inventory.load(write(tmp_path, GOOD))
    a, b = inv.hosts
    assert (a.name, a.user, a.port, a.python, a.workdir, a.gpus, a.tags) == (
        "gpu01", "train", None, "/opt/venv/bin/python", "/scratch/headnode", 8, ("h100",)
    )
    assert (b.user, b.port, b.gpus, b.network_interface) == ("other", 2222, None, "eth0")
    assert inv.cluster_name == "lab"
    assert inv.state_dir == (tmp_path / "state").absolute()
    assert inv.settings.node_lost_timeout == 12.0
    assert inv.settings.port_range == (30000, 30100)
    assert inv.settings.telemetry_interval == 2.0


def test_without_any_config_the_default_is_this_machine_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEADNODE_CONFIG", raising=False)
    inv = inventory.load(None)
    assert [(h.name, h.address, h.is_local, h.gpus) for h in inv.hosts] == [("localhost", "localhost", True, None)]
    assert inv.hosts[0].python == sys.executable


def test_headnode_config_env_is_used_when_no_flag_is_given(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("HEADNODE_CONFIG", str(path))
    monkeypatch.chdir("/")
    assert inventory.load(None).path == path.absolute()


def test_remote_home_relative_workdir_becomes_a_relative_path():
    h = inventory.Host(name="a", address="10.0.0.1", workdir="~/headnode")
    assert h.path("runs", "3") == "headnode/runs/3"
    assert inventory.Host(name="a", address="10.0.0.1", workdir="/scratch").path("data") == "/scratch/data"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[[hosts]]\nname = 'a'\naddress = 'x'\nbogus = 1\n", "hosts.toml:4: host 'a': unknown key 'bogus'"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\n[[hosts]]\nname = 'a'\naddress = 'y'\n", "hosts.toml:5: host 'a': duplicate host name"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\n[[hosts]]\nname = 'b'\naddress = 'x'\n", "host 'b': duplicate address x"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\ngpus = -2\n", "hosts.toml:4: host 'a': gpus must be 0 or more, not -2"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\ngpus = '8'\n", "gpus must be an integer, not '8'"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\ngpus = true\n", "gpus must be an integer, not True"),
        ("[[hosts]]\nname = 'a'\n", "missing 'address'"),
        ("[[hosts]]\nname = 'a; touch /tmp/pwned'\naddress = 'x'\n", "name may contain only letters"),
        ("[[hosts]]\nname = 'a'\naddress = 'x'\ntags = ['a; touch /tmp/pwned']\n", "tag 'a; touch /tmp/pwned' may contain only"),
        ("[[hosts]]\nname = 'a'\naddress = '$(reboot)'\n", "is not a host name or IP address"),
        ("[defaults]\nport = 70000\n", "port must be 1..65535"),
        ("[cluster]\nnmae = 'x'\n", "hosts.toml:2: [cluster]: unknown key 'nmae'"),
        ("[clusters]\n", "unknown section 'clusters'"),
        ("[scheduler]\nnode_lost_timeout = -1\n", "node_lost_timeout must be positive"),
        ("[scheduler]\nport_range = [10, 5]\n", "port_range must be [LOW, HIGH]"),
        ("[[hosts]]\nname = 'a'\naddress = \n", "not valid TOML"),
    ],
)
def test_bad_inventories_are_rejected_with_file_line_and_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        inventory.load(write(tmp_path, text))
    assert expected in str(e.value)
    assert str(e.value).endswith(".")
    assert "\n" not in e.value.sentence()


def test_a_missing_config_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        inventory.load(tmp_path / "nope.toml")


def test_unknown_host_names_the_known_ones(tmp_path):
    inv = inventory.load(write(tmp_path, GOOD))
    with pytest.raises(UserError, match="defines gpu01, gpu02"):
        inv.host("gpu03")


toml_scalars = st.one_of(st.integers(-5, 70000), st.text(max_size=12), st.booleans(), st.lists(st.integers(), max_size=2))
host_tables = st.dictionaries(
    st.sampled_from(["name", "address", "gpus", "port", "tags", "user", "python", "bogus", "workdir"]), toml_scalars, max_size=6
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(hosts=st.lists(host_tables, max_size=4), defaults=host_tables)
def test_any_inventory_either_loads_or_raises_a_config_error(tmp_path, hosts, defaults):
    doc = {"defaults": {k: v for k, v in defaults.items() if k not in ("name", "address")}, "hosts": hosts}
    try:
        inv = inventory.parse(doc, tmp_path / "hosts.toml", "")
    except ConfigError as e:
        assert e.sentence().endswith(".")
    else:
        assert len(inv.hosts) == len(hosts)
        assert all(inventory.NAME_RE.match(h.name) for h in inv.hosts)


def test_the_repository_example_inventory_loads():
    example = Path(__file__).parent.parent / "hosts.toml"
    if not example.exists():
        pytest.skip("hosts.toml example not written yet")
    inventory.load(example)


def test_cli_reports_a_bad_inventory_without_a_traceback(tmp_path):
    path = write(tmp_path, "[[hosts]]\nname = 'a'\naddress = 'x'\ngpus = -1\n")
    r = subprocess.run([sys.executable, "-m", "scheduler", "--config", str(path), "hosts"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("headnode: ") and "gpus must be 0 or more" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1

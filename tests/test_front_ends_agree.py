"""`headnode hosts --json`, the console's Cluster screen and its header, and `headnode top` show the
same state and GPUs per host.

The store holds running, exited and lost nodes, written with SQL (not through the job lifecycle):
what matters here is only how the front ends read them.
"""

from __future__ import annotations

import json

import pytest

from console.app import build_app
from console.widgets.line_table import LineTable
from scheduler import cli, inventory
from scheduler.store import Store, dumps
from scheduler.telemetry import view
from tests.console_synthetic import settle

pytestmark = pytest.mark.anyio

HOSTS = (  # name, declared GPUs, reachability, draining, GPUs the last probe found
    ("gpu01", 8, "up", 0, 8),
    ("gpu02", None, "up", 1, 4),
    ("gpu03", 4, "down", 1, None),
    ("gpu04", None, "unknown", 0, None),
)
JOBS = (  # id, state, current attempt
    (1, "RUNNING", 1),
    (2, "RUNNING", 1),
    (3, "SUCCEEDED", 1),
    (4, "FAILED", 1),
    (5, "RUNNING", 2),
)
NODES = (  # job, attempt, rank, host, GPUs, node state
    (1, 1, 0, "gpu01", [0, 1], "RUNNING"),
    (2, 1, 0, "gpu01", [2, 3], "EXITED"),  # its job still runs: the attempt keeps the GPUs
    (2, 1, 1, "gpu02", [0, 1], "RUNNING"),
    (3, 1, 0, "gpu02", [2, 3], "EXITED"),  # a finished job holds nothing
    (4, 1, 0, "gpu03", [0, 1, 2], "LOST"),  # its job ended, but the host never answered: may still run
    (5, 1, 0, "gpu04", [0], "EXITED"),  # an earlier attempt
    (5, 2, 0, "gpu01", [4], "STARTING"),
)
EXPECTED = {  # state, (GPUs in use, GPUs)
    "gpu01": ("up", (5, 8)),
    "gpu02": ("draining", (2, 4)),
    "gpu03": ("down", (3, 4)),
    "gpu04": ("unknown", (0, None)),
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "hosts.toml"
    path.write_text(
        f'[cluster]\nname = "agree"\nstate_dir = {json.dumps(str(tmp_path / "state"))}\n'
        + "".join(
            f'\n[[hosts]]\nname = "{name}"\naddress = "10.0.0.{i + 1}"\n' + (f"gpus = {gpus}\n" if gpus is not None else "")
            for i, (name, gpus, *_) in enumerate(HOSTS)
        )
    )
    with Store.for_state_dir(tmp_path / "state") as store, store.tx():
        db = store.conn
        db.executemany(
            "INSERT INTO hosts (name, address, state, draining, gpus_detected) VALUES (?, ?, ?, ?, ?)",
            [(name, f"10.0.0.{i + 1}", state, draining, detected) for i, (name, _, state, draining, detected) in enumerate(HOSTS)],
        )
        db.executemany(
            "INSERT INTO jobs (id, name, state, command, nodes, gpus_per_node, attempt, submitted_at) VALUES (?, ?, ?, '[]', 1, 2, ?, 0)",
            [(id_, f"job-{id_}", state, attempt) for id_, state, attempt in JOBS],
        )
        db.executemany(
            "INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus, state) VALUES (?, ?, ?, ?, ?, ?)",
            [(j, a, r, h, dumps(g), s) for j, a, r, h, g, s in NODES],
        )
    return path


async def test_hosts_json_and_the_cluster_screen_agree_on_state_and_gpus_in_use(config, capsys):
    assert cli.main(["hosts", "--json", "--config", str(config)]) == 0
    cli_view = {h["name"]: (h["state"], (h["gpus_in_use"], h["gpus"])) for h in json.loads(capsys.readouterr().out)}

    app = build_app(inventory.load(config), embedded_loop=False, mode="cluster")
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#hosts-table", LineTable)
        console_view = {k: (table.row(k)[1], table.row(k)[2]) for k in table.keys}
        header = (app.overview.gpus_used, app.overview.gpus)

    assert cli_view == console_view == EXPECTED
    assert header == (sum(u for _, (u, _) in EXPECTED.values()), sum(t or 0 for _, (_, t) in EXPECTED.values()))


def test_top_shows_the_same_host_states_as_hosts(config):
    inv = inventory.load(config)
    with Store.for_state_dir(inv.state_dir) as store:
        doc = view.from_store(store, inv)

    assert {h["name"]: h["state"] for h in doc["hosts"]} == {name: state for name, (state, _) in EXPECTED.items()}

"""Actions from the console: submit (validation, then success), cancel with confirmation, drain."""

from __future__ import annotations

import random
import time

import pytest
from textual.widgets import Input

from console.app import build_app
from console.screens.confirm_cancel import ConfirmCancel
from console.screens.submit import SubmitScreen, spec_from_form
from scheduler import jobs
from scheduler.errors import UserError
from scheduler.store import Store
from tests.console_synthetic import screen_text, settle, synthetic  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio


def job_rows(inv, where: str = "1", params=()):
    with Store.for_state_dir(inv.state_dir) as store:
        return store.query(f"SELECT * FROM jobs WHERE {where} ORDER BY id", params)


async def fill(pilot, field: str, text: str) -> None:
    pilot.app.screen.query_one(f"#f-{field}", Input).value = text


def notices(app) -> dict[str, str]:
    """The notifications shown, title -> message (those with a title)."""
    return {n.title: n.message for n in app._notifications if n.title}


def shown_errors(app) -> dict[str, str]:
    """The submit form's error labels that show something: label id -> text."""
    return {label.id: str(label.content) for label in app.screen.query(".field-error") if str(label.content)}


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
async def test_submit_shows_a_mistake_under_its_field_then_submits(synthetic, size):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, SubmitScreen)
        await fill(pilot, "name", "bigrun")
        await fill(pilot, "nodes", "two")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "nodes must be a whole number" in screen_text(app)
        assert app.focused.id == "f-nodes"

        await fill(pilot, "nodes", "99")  # more hosts than the cluster has: refused by the library
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "needs 99 hosts" in screen_text(app)
        assert job_rows(synthetic, "name = 'bigrun'") == []

        await fill(pilot, "nodes", "2")
        await fill(pilot, "gpus_per_node", "4")
        await fill(pilot, "env", "NCCL_DEBUG=INFO")
        await fill(pilot, "time_limit", "30m")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, SubmitScreen)
        [job] = job_rows(synthetic, "name = 'bigrun'")
        assert (job["state"], job["nodes"], job["gpus_per_node"], job["time_limit"], job["env"]) == (
            "PENDING", 2, 4, 1800.0, '{"NCCL_DEBUG":"INFO"}')
        assert any(f"submitted job {job['id']} (bigrun)" in n.message for n in app._notifications)


async def test_a_cpu_job_asks_for_processes_per_node_and_a_gpu_job_cannot(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        await fill(pilot, "name", "cpurun")
        await fill(pilot, "gpus_per_node", "1")
        await fill(pilot, "procs_per_node", "4")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "--procs-per-node is for CPU jobs only" in screen_text(app)
        assert app.focused.id == "f-gpus_per_node"  # the library names the GPUs as what to change

        await fill(pilot, "gpus_per_node", "")
        await pilot.press("ctrl+s")
        await settle(pilot)
        [job] = job_rows(synthetic, "name = 'cpurun'")
        assert (job["gpus_per_node"], job["procs_per_node"]) == (0, 4)


async def test_cancel_shows_what_will_stop_and_cancels_only_on_yes(synthetic):
    [pending] = job_rows(synthetic, "id = 41")
    assert pending["state"] == "PENDING"
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"cancel 41", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmCancel)
        assert "Cancel job 41 (run-00041)?" in screen_text(app)
        assert "not started on any host: it leaves the queue" in screen_text(app)
        await pilot.press("n")
        await settle(pilot)
        assert job_rows(synthetic, "id = 41")[0]["state"] == "PENDING"

        await pilot.press("slash", *"run-00041", "enter", "x")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert job_rows(synthetic, "id = 41")[0]["state"] == "CANCELLED"
        assert notices(app)["job 41: cancel verified"] == "job 41 cancelled before it started"


@pytest.mark.parametrize(("field", "text"), [("nodes", "99"), ("data", "nosuch@v1")])
async def test_submit_shows_a_library_error_under_the_field_the_error_names(synthetic, field, text):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        await fill(pilot, field, text)
        spec = spec_from_form(app.screen.values())
        with Store.for_state_dir(synthetic.state_dir) as store, pytest.raises(UserError) as refused:
            jobs.submit(store, synthetic, spec)
        assert refused.value.field == field
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert shown_errors(app) == {f"e-{field}": refused.value.sentence()}
        assert app.focused.id == f"f-{field}"


async def test_submit_shows_an_error_about_a_field_the_form_lacks_under_the_whole_form(synthetic, monkeypatch):
    error = UserError("bad tag 'x y'", "tags contain only letters", "use a tag from hosts.toml", field="tags")

    def refuse(store, inventory, spec):
        raise error

    monkeypatch.setattr(jobs, "submit", refuse)
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert shown_errors(app) == {"e-form": error.sentence()}


async def test_cancel_of_a_running_job_lists_its_nodes_and_gpus(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("x")  # the cursor starts on job 50, RUNNING on one node
        await settle(pilot)
        text = screen_text(app)
        assert "It is RUNNING. These will be stopped, and checked gone:" in text
        assert "node 0 on gpu0" in text and "GPUs 6,7" in text


async def test_d_drains_the_highlighted_host_and_again_undrains_it(synthetic):
    app = build_app(synthetic, embedded_loop=False, mode="cluster")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        with Store.for_state_dir(synthetic.state_dir) as store:
            assert store.one("SELECT draining FROM hosts WHERE name = 'gpu000'")["draining"] == 1
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        with Store.for_state_dir(synthetic.state_dir) as store:
            assert store.one("SELECT draining FROM hosts WHERE name = 'gpu000'")["draining"] == 0


async def test_colon_drain_of_an_unknown_host_says_which_hosts_exist(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"drain nosuch", "enter")
        await settle(pilot)
        assert any("unknown host 'nosuch'" in n.message and "gpu000" in n.message for n in app._notifications)


async def test_the_command_palette_reaches_the_screens_and_commands_with_arguments(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p", *"events")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_mode == "events"
        await pilot.press("ctrl+p", *"job 7")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert "job 7 run-00007" in screen_text(app)


async def test_verify_then_sync_a_dataset_from_the_datasets_screen(local_config, tmp_path):
    from scheduler import inventory
    from scheduler.data.prepare import prepare

    text = tmp_path / "words.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    inv = inventory.load(local_config)
    with Store.for_state_dir(inv.state_dir) as store:
        ref = prepare(store, [str(text)], "words", progress=False)
    app = build_app(inv, embedded_loop=False, mode="datasets")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        await pilot.press("y")
        for _ in range(50):
            await settle(pilot)
            if any("sync done" in n.message for n in app._notifications):
                break
        messages = [n.message for n in app._notifications]
        assert f"words@{ref.version}: verify done: 1 absent" in messages
        assert f"words@{ref.version}: sync done: 1 verified" in messages
        await settle(pilot)
        placement = app.screen.query_one("#placement-table")
        assert placement.row("localhost")[1] == "verified"


async def test_cancel_from_the_console_with_no_loop_running_stops_the_job_verified(local_config):
    from scheduler import inventory, loop
    from scheduler.execute import Executor
    from tests.test_loop_local import FAST, cycle_until, marked, submit

    low = random.randrange(20000, 60000, 100)  # rendezvous ports: localhost's are shared with other runs
    local_config.write_text(local_config.read_text() + FAST + f"port_range = [{low}, {low + 99}]\n")
    inv = inventory.load(local_config)
    with Store.for_state_dir(inv.state_dir) as store:
        job_id = submit(store, inv, ["sleep", "300"])
        executor = Executor(inv)
        try:  # one loop, cycled here until the job runs, then gone: no lease is held
            cycle_until(loop.Loop(inv, store, executor), store, job_id, {"RUNNING"})
        finally:
            executor.close()
    for _ in range(100):  # RUNNING means the leader started; its environ can read empty mid-exec
        if marked(inv, job_id):
            break
        time.sleep(0.1)
    assert marked(inv, job_id)

    app = build_app(inv, embedded_loop=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *f"cancel {job_id}", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmCancel)
        await pilot.press("y")
        for _ in range(100):
            await settle(pilot)
            if notices(app):
                break
        assert notices(app) == {f"job {job_id}: cancel verified": f"job {job_id} cancelled; verified: no process left on localhost"}
        assert f"job {job_id}: no scheduler loop is running; stopping it from here" in [n.message for n in app._notifications]
    [row] = job_rows(inv, "id = ?", (job_id,))
    assert row["state"] == "CANCELLED" and row["reason"].startswith("cancelled by ")
    assert marked(inv, job_id) == []

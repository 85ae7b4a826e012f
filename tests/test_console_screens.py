"""The console's screens on a synthetic store, at 80x24 and at a large size."""

from __future__ import annotations

import pytest

from console.app import build_app
from console.screens.job import JobScreen
from console.widgets.line_table import LineTable
from console.widgets.loss_chart import LossChart
from tests.console_synthetic import screen_text, settle, synthetic  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio
SMALL, LARGE = (80, 24), (160, 50)


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_queue_lists_jobs_newest_first_with_state_shape_and_progress(synthetic, size):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        assert "2 Queue" in lines[0] and "scheduler: 4242@head" in lines[0]
        assert lines[2].split()[:8] == ["50", "run-00050", "RUNNING", "1×2", "2h", "500", "3.000", "50.0k"]
        assert app.screen.query_one(LineTable).row_count == 50


async def test_number_keys_switch_screens_and_esc_returns_from_a_job(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        assert app.current_mode == "cluster" and "gpu000" in screen_text(app)
        await pilot.press("4")
        await settle(pilot)
        assert "job:50" in screen_text(app)
        await pilot.press("2", "enter")
        await settle(pilot)
        assert "job 50 run-00050  RUNNING" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen.tab == "queue" and not isinstance(app.screen, JobScreen)
        assert "REASON" in screen_text(app)


async def test_slash_filters_the_queue_and_esc_clears_the_filter(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"timeout", "enter")
        table = app.screen.query_one(LineTable)
        assert table.row_count == 6
        assert {table.row(k)[2] for k in table.keys} == {"TIMEOUT"}
        await pilot.press("escape")
        assert table.row_count == 50


async def test_s_cycles_the_sort_of_the_queue(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("s")
        table = app.screen.query_one(LineTable)
        states = [table.row(k)[2] for k in table.keys]
        assert states[0] == "RUNNING" and states[-1] == "SUCCEEDED"


async def test_the_job_screen_shows_placement_metrics_and_the_nodes_log(synthetic, tmp_path):
    run_dir = tmp_path / "state" / "work" / "runs" / "50"
    (run_dir / "attempt-1").mkdir(parents=True)
    (run_dir / "attempt-1" / "node-0.log").write_text("[rank0]:hello from rank 0\n[rank1]:and rank 1\n")
    (run_dir / "metrics.jsonl").write_text("".join(f'{{"step":{s},"loss":{3 - s / 100}}}\n' for s in range(0, 100, 10)))
    app = build_app(synthetic, embedded_loop=False, job=50)
    async with app.run_test(size=SMALL) as pilot:
        for _ in range(40):  # the log arrives through a follow stream: poll until it is shown
            await settle(pilot)
            if "and rank 1" in screen_text(app):
                break
        text = screen_text(app)
        assert "step 500  loss 3.000  50.0k tok/s" in text
        assert "[node 0 rank 0] hello from rank 0" in text and "[node 0 rank 1] and rank 1" in text
        assert len(app.screen.query_one(LossChart).train) == 10
        nodes = app.screen.query_one("#nodes-table", LineTable)
        host, gpus = nodes.row(0)[1], nodes.row(0)[2]
        assert host.startswith("gpu") and len(gpus) == 2
        await pilot.press("r")
        await pilot.pause()
        text = screen_text(app)
        assert "hello from rank 0" in text and "and rank 1" not in text


@pytest.mark.parametrize("size", [SMALL, LARGE])
async def test_cluster_shows_hosts_states_and_the_gpus_of_the_highlighted_host(synthetic, size):
    app = build_app(synthetic, embedded_loop=False, mode="cluster")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        hosts = app.screen.query_one("#hosts-table", LineTable)
        assert [hosts.row(k)[1] for k in ("gpu000", "gpu001", "gpu002")] == ["up", "down", "draining"]
        busy = next(k for k in hosts.keys if hosts.row(k)[2][0] > 0)
        hosts.move_to(busy)
        await settle(pilot)
        text = screen_text(app)
        assert f"GPUs of {busy}" in text and "H100" in text
        gpus = app.screen.query_one("#gpus-table", LineTable)
        jobs = {gpus.row(k)[-1] for k in gpus.keys} - {None}
        assert jobs and all(isinstance(j, int) for j in jobs)


async def test_datasets_show_versions_and_placement_per_host(synthetic):
    app = build_app(synthetic, embedded_loop=False, mode="datasets")
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "stdlib@a1b2c3d4e5f6" in text and "wiki@3f2a9c1b7d4e" in text
        placement = app.screen.query_one("#placement-table", LineTable)
        states = {placement.row(k)[1] for k in placement.keys}
        assert states == {"verified", "syncing", "corrupt", "absent"}


async def test_events_are_newest_first_and_filterable(synthetic):
    app = build_app(synthetic, embedded_loop=False, mode="events")
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        table = app.screen.query_one(LineTable)
        assert table.keys[0] == 100 and table.row_count == 100
        await pilot.press("slash", *"job:7", "enter")
        assert {table.row(k)[1] for k in table.keys} <= {"job:7"} | {f"job:{n}" for n in range(70, 80)}


async def test_question_mark_lists_keys_and_commands(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=LARGE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        assert "Filter" in text and "Cancel job" in text and ":cancel JOB" in text
        await pilot.press("escape")
        assert app.screen.tab == "queue"


async def test_colon_command_mode_opens_a_job_and_rejects_an_unknown_command(synthetic):
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"job 7", "enter")
        await settle(pilot)
        assert "job 7 run-00007" in screen_text(app)
        await pilot.press("colon", *"frobnicate", "enter")
        await pilot.pause()
        assert any("unknown command 'frobnicate'" in n.message for n in app._notifications)


async def test_the_header_says_no_scheduler_when_no_loop_holds_the_lease(synthetic):
    from scheduler.store import Store

    with Store.for_state_dir(synthetic.state_dir) as store:
        store.execute("DELETE FROM lease")
    app = build_app(synthetic, embedded_loop=False)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        assert "no scheduler" in screen_text(app).splitlines()[0]


async def test_the_console_takes_over_the_loop_when_the_holders_lease_has_expired(local_config):
    import time

    from scheduler import inventory
    from scheduler.store import Store

    inv = inventory.load(local_config)
    with Store.for_state_dir(inv.state_dir) as store:
        store.execute("INSERT INTO lease (name, holder, kind, acquired_at, expires_at) VALUES"
                      " ('scheduler', '1@gone', 'foreground', ?, ?)", (time.time() - 60, time.time() - 1))
    app = build_app(inv)
    async with app.run_test(size=SMALL) as pilot:
        for _ in range(100):
            await settle(pilot)
            if app.embedded and "scheduler: embedded" in screen_text(app):
                break
        assert "scheduler: embedded" in screen_text(app).splitlines()[0]
    with Store.for_state_dir(inv.state_dir) as store:
        assert store.one("SELECT what FROM events WHERE object = 'lease:scheduler' ORDER BY id DESC LIMIT 1") == {
            "what": "released"}


async def test_a_watched_job_that_ends_is_announced_with_the_callers_hint(synthetic):
    from scheduler.store import Store

    app = build_app(synthetic, embedded_loop=False, job=50, on_job_end="press q for more")
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        with Store.for_state_dir(synthetic.state_dir) as store:
            store.execute("UPDATE jobs SET state = 'SUCCEEDED', reason = 'every node exited 0' WHERE id = 50")
        for _ in range(20):
            await settle(pilot)
            if app._notifications:
                break
        assert [n.message for n in app._notifications] == [
            "job 50 ended SUCCEEDED: every node exited 0; press q for more"]
        assert "log (job ended: press q for more)" in screen_text(app)

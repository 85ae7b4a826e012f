"""Snapshots of the main screens (pytest-textual-snapshot; `--snapshot-update` to accept a change).

Deterministic: the synthetic store has fixed times, the console's clock is fixed, local time is UTC.
"""

from __future__ import annotations

import pytest

from console.app import build_app
from tests.console_synthetic import settle, synthetic  # noqa: F401 (fixture)


@pytest.mark.parametrize("mode", ["queue", "cluster", "datasets", "events"])
def test_main_screen_at_80x24(snap_compare, synthetic, mode):
    assert snap_compare(build_app(synthetic, embedded_loop=False, mode=mode), terminal_size=(80, 24), run_before=settle)


def test_queue_and_cluster_on_a_large_terminal(snap_compare, synthetic):
    async def cluster(pilot):
        await settle(pilot)
        await pilot.press("1", "end")
        await settle(pilot)

    assert snap_compare(build_app(synthetic, embedded_loop=False), terminal_size=(160, 50), run_before=cluster)


def test_job_screen_with_its_loss_chart(snap_compare, synthetic):
    run_dir = synthetic.state_dir / "work" / "runs" / "50"
    run_dir.mkdir(parents=True)

    def line(s: int) -> str:
        eval_loss = f',"eval_loss":{round(5.6 * 0.97 ** s + 2.1, 4)}' if s % 20 == 0 else ""
        return f'{{"step":{s},"loss":{5.5 * 0.97 ** s + 2:.4f}{eval_loss}}}\n'

    (run_dir / "metrics.jsonl").write_text("".join(line(s) for s in range(0, 200, 5)))

    async def loaded(pilot):
        await settle(pilot)
        await settle(pilot)

    assert snap_compare(build_app(synthetic, embedded_loop=False, job=50), terminal_size=(80, 24), run_before=loaded)


def test_submit_form_at_80x24(snap_compare, synthetic):
    async def form(pilot):
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        pilot.app.screen.query_one("#f-nodes").value = "x"
        await pilot.press("ctrl+s")
        await pilot.pause()

    assert snap_compare(build_app(synthetic, embedded_loop=False), terminal_size=(80, 24), run_before=form)

"""Helpers shared by the tests that run the scheduler loop against real hosts."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from scheduler import inventory, loop
from scheduler.model import TERMINAL
from scheduler.store import Store


def existing_store(config: Path) -> None:
    """Create the config's store now, so the command under test is not the first one (which says, on
    stderr, that it created a store) when the test reads stderr as one exact sentence."""
    with Store.for_state_dir(inventory.load(config).state_dir):
        pass


@contextlib.contextmanager
def scheduler(config: Path):
    """The loop in a thread of this process, as the console embeds it."""
    stop = threading.Event()
    t = threading.Thread(
        target=loop.run_forever,
        args=(inventory.load(config),),
        kwargs={"kind": "console", "stop_event": stop, "telemetry": False},
        daemon=True,
    )
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(30)


def wait_state(store: Store, job_id: int, states=TERMINAL, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row["state"] in states:
            return row
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {row['state']} ({row['reason']}) after {timeout} s")

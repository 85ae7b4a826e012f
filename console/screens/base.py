"""A screen that polls the store through console/poll.py: one load at a time, re-armed after each
result or failure, and stopped while the screen is not in front."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from scheduler.store import Store

from ..poll import Poll


class PolledScreen(Screen):
    AUTO_FOCUS = "LineTable"  # the table, not a hidden filter input that would swallow the keys
    interval = 1.0  # seconds between the end of one poll and the start of the next
    what = "the screen"  # for the notice when a poll fails

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._poll = Poll(self, self.load, self.show, interval=self.interval, what=self.what,
                          armed=lambda: self.is_current)

    def fetch(self, store: Store) -> Any:
        """Runs in the store thread: read what the screen shows. Must not touch widgets."""
        raise NotImplementedError

    def load(self) -> Any:
        """Runs in a thread worker: by default the store read alone; screens that also read hosts
        (over SSH) extend it. Returns what show() needs and changes nothing on the screen."""
        return self.app.db.call(self.fetch)

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what load returned."""
        raise NotImplementedError

    def poll(self) -> None:
        """Re-read now (after an action), or right after the poll in flight."""
        self._poll.now()

    def on_screen_resume(self) -> None:
        self._poll.resume()

    def on_screen_suspend(self) -> None:
        self._poll.stop()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if not self._poll.ended(event) and event.state is WorkerState.ERROR:
            self.app.show_error(event.worker.error)

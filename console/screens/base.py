"""A screen that polls the store: one thread-worker run per poll, re-armed by a timer when its
result has been shown, so polls never overlap and stop while the screen is not in front."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer

from scheduler.store import Store


class PolledScreen(Screen):
    AUTO_FOCUS = "LineTable"  # the table, not a hidden filter input that would swallow the keys
    interval = 1.0  # seconds between the end of one poll and the start of the next

    class Fetched(Message):
        def __init__(self, data: Any) -> None:
            super().__init__()
            self.data = data

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._timer: Timer | None = None

    def fetch(self, store: Store) -> Any:
        """Runs in the store thread: read what the screen shows. Must not touch widgets."""
        raise NotImplementedError

    def load(self) -> Any:
        """Runs in a thread worker: by default the store read alone; screens that also read hosts
        (over SSH) extend it."""
        return self.app.db.call(self.fetch)

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what fetch returned."""
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        self.poll()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self) -> None:
        self.post_message(self.Fetched(self.load()))

    @on(Fetched)
    def _fetched(self, message: Fetched) -> None:
        self.show(message.data)
        if self.is_current:
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(self.interval, self.poll)

"""A poll that cannot stop and cannot overlap: for the screens and for the header's lease watch.

A poll is one thread-worker run of `load`, which reads and returns data and changes nothing. Its end
reaches the owner as Worker.StateChanged, on the UI thread, and the owner hands it to `Poll.ended`:
the data is shown, or the failure reported (once per distinct error, not once per poll), and the next
poll is armed either way. A refresh asked for while a poll runs (after an action) runs once right
after it ends, never alongside it, so the incremental state that `show` keeps (log offsets, chart
points) takes each read exactly once.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from textual.dom import DOMNode
from textual.timer import Timer
from textual.worker import Worker, WorkerState


class Poll:
    def __init__(self, owner: DOMNode, load: Callable[[], Any], show: Callable[[Any], None], *, interval: float,
                 what: str, armed: Callable[[], bool] = lambda: True) -> None:
        """interval: seconds from the end of one poll to the start of the next; what: the view, for
        the failure notice; armed: whether to keep polling (a screen: while it is in front)."""
        self._owner, self._load, self._show = owner, load, show
        self.interval, self.what, self._armed = interval, what, armed
        self._worker: Worker | None = None
        self._again = False
        self._timer: Timer | None = None
        self.error: str | None = None  # the failure reported last; cleared by a poll that succeeds

    def now(self) -> None:
        """Poll now or, while a poll runs, once more as soon as it ends."""
        self._stop_timer()
        if self._worker is not None:
            self._again = True
            return
        self._worker = self._owner.run_worker(self._load, name=f"poll {self.what}", group="poll", thread=True,
                                              exit_on_error=False)

    def resume(self) -> None:
        """Keep polling: now, unless a poll runs (its end arms the next one)."""
        if self._worker is None:
            self.now()

    def stop(self) -> None:
        """No next poll; one in flight still ends and is shown."""
        self._stop_timer()
        self._again = False

    def ended(self, event: Worker.StateChanged) -> bool:
        """For the owner's Worker.StateChanged handler: whether the event was this poll's."""
        if event.worker is not self._worker:
            return False
        if event.state in (WorkerState.PENDING, WorkerState.RUNNING):
            return True
        self._worker = None
        if event.state is WorkerState.CANCELLED:  # the owner is going away; its thread may still be reading
            return True
        if event.state is WorkerState.SUCCESS:
            self.error = None
            self._show(event.worker.result)
        else:
            self._failed(event.worker.error)
        if self._again:
            self._again = False
            self.now()
        elif self._armed():
            self._timer = self._owner.set_timer(self.interval, self.now)
        return True

    def _failed(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self.error:
            self.error = text
            self._owner.app.show_error(error, about=f"{self.what} not refreshed (retrying every {self.interval:g} s)")

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

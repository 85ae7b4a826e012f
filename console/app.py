"""The headnode console: a Textual app over the store, with the scheduler loop embedded when no other
loop holds the lease.

Reads go through one store thread (console/db.py) from polling thread workers; actions (submit,
cancel, drain, data sync/verify) open their own Store in their own worker and call the scheduler
library, never the CLI. One method, show_error, turns worker failures into notifications; a failed
poll says so once and is retried (console/poll.py).
"""

from __future__ import annotations

import threading
from typing import Any
from collections.abc import Callable

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from scheduler import control, jobs, lease
from scheduler.errors import UserError
from scheduler.inventory import Inventory
from scheduler.model import Job
from scheduler.store import Store, StoreGone

from . import commands, queries
from . import format as fmt
from .db import StoreThread
from .palette import HeadnodeCommands
from .poll import Poll
from .screens.cluster import ClusterScreen
from .screens.command_line import CommandLine
from .screens.confirm_cancel import ConfirmCancel
from .screens.datasets import DatasetsScreen
from .screens.events import EventsScreen
from .screens.help import HelpScreen
from .screens.job import JobScreen
from .screens.queue import QueueScreen
from .screens.submit import SubmitScreen

OVERVIEW_INTERVAL = 1.0  # seconds between header refreshes


class HeadnodeApp(App):
    CSS_PATH = "console.tcss"
    TITLE = "headnode"
    MODES = {"cluster": ClusterScreen, "queue": QueueScreen, "datasets": DatasetsScreen, "events": EventsScreen}
    DEFAULT_MODE = "queue"
    COMMANDS = App.COMMANDS | {HeadnodeCommands}
    BINDINGS = [
        Binding("1", "switch_mode('cluster')", "Cluster", show=False, id="app.cluster"),
        Binding("2", "switch_mode('queue')", "Queue", show=False, id="app.queue"),
        Binding("3", "switch_mode('datasets')", "Data", show=False, id="app.datasets"),
        Binding("4", "switch_mode('events')", "Events", show=False, id="app.events"),
        Binding("n", "submit", "Submit", id="app.submit"),
        Binding("colon", "command_line", "Cmd", id="app.command"),
        Binding("question_mark", "help", "Keys", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    overview: reactive[queries.Overview | None] = reactive(None)
    embedded: reactive[bool] = reactive(False)
    store_gone: reactive[str | None] = reactive(None)  # why the store cannot be read (StoreGone), while so
    loop_stopped: reactive[str | None] = reactive(None)  # why the embedded loop stopped for good

    def __init__(self, inventory: Inventory, *, embedded_loop: bool | None = None, mode: str = "queue",
                 job: int | None = None, on_job_end: str | None = None) -> None:
        super().__init__()
        self.inventory = inventory
        self.embedded_loop = embedded_loop
        self.db = StoreThread(inventory.state_dir)
        self._start_mode, self._start_job = mode, job
        self.on_job_end = on_job_end  # what to do once the job being watched ends (the demo says)
        self._executor = None
        self._executor_lock = threading.Lock()
        self._loop_stop = threading.Event()
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._loop_failed = False  # a loop that crashed here is not restarted every second
        self._holder = lease.holder_id()
        self._overview_poll = Poll(self, self._read_overview, self._overview_read, interval=OVERVIEW_INTERVAL,
                                   what="the header")

    # --- lifecycle ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.switch_mode(self._start_mode)
        if self._start_job is not None:
            self.open_job(self._start_job)
        self._overview_poll.resume()
        if self.embedded_loop is not False:
            self.start_loop()

    def on_unmount(self) -> None:
        self._loop_stop.set()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=30)
        if self._executor is not None:
            self._executor.close()
        self.db.close()

    @property
    def executor(self):
        """One Executor for the console's own host reads (logs, metrics), made on first use."""
        with self._executor_lock:
            if self._executor is None:
                from scheduler.execute import Executor

                self._executor = Executor(self.inventory)
            return self._executor

    def write(self, fn: Callable[[Store], Any]) -> Any:
        """Run fn(store) with a Store of this thread's own (for actions, from a worker thread)."""
        with Store.for_state_dir(self.inventory.state_dir) as store:
            return fn(store)

    # --- header data and the embedded loop ------------------------------------------------

    def _read_overview(self) -> queries.Overview:
        return self.db.call(queries.overview, self.inventory, fmt.now())

    def _overview_read(self, ov: queries.Overview) -> None:
        self.overview = ov
        self.store_gone = None
        # embedded: our thread runs the loop, or another thread of this process does (`headnode demo`)
        running_here = self._loop_thread is not None and self._loop_thread.is_alive()
        self.embedded = running_here or ov.holder == self._holder
        if ov.holder is None and not running_here and self.embedded_loop is not False and not self._loop_failed:
            self.start_loop()  # the loop that held the lease is gone (its lease expired): take over

    @work(thread=True, exclusive=True, group="loop", exit_on_error=False)
    def start_loop(self) -> None:
        """Run the scheduler loop in a thread unless another loop holds the lease (then only read)."""
        with self._loop_lock:  # one loop thread at most: both the mount and a takeover may ask
            if self._loop_stop.is_set() or (self._loop_thread is not None and self._loop_thread.is_alive()):
                return
            if self.embedded_loop is None and self.db.call(lease.active) is not None:
                return
            self._loop_thread = threading.Thread(target=self._run_loop, name="scheduler-loop")
            self._loop_thread.start()

    def _run_loop(self) -> None:
        from scheduler import loop

        try:
            loop.run_forever(self.inventory, kind="console", stop_event=self._loop_stop)
        except lease.LeaseHeld:  # another loop won the race; this console only reads until it goes
            pass
        except StoreGone as e:  # the store file vanished or changed: the loop stopped, writing nothing more
            self._loop_failed = True
            self.call_from_thread(self._loop_stopped, e.sentence())
        except Exception as e:
            self._loop_failed = True
            self.call_from_thread(self.notify, f"the embedded scheduler loop stopped: {e}", severity="error", timeout=30)

    def _loop_stopped(self, sentence: str) -> None:
        self.loop_stopped = self.store_gone = sentence
        self.notify(sentence, title="scheduler loop stopped", severity="error", timeout=3600)

    # --- one place for worker failures ----------------------------------------------------

    def show_error(self, error: BaseException, *, about: str | None = None) -> None:
        """What a failed worker (the app's or a screen's) says to the user."""
        if isinstance(error, StoreGone):
            self.store_gone = error.sentence()  # the header says so until a read works again
        text = error.sentence() if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        self.notify(f"{about}: {text}" if about else text, severity="error", timeout=10)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if not self._overview_poll.ended(event) and event.state is WorkerState.ERROR:
            self.show_error(event.worker.error)

    # --- navigation ---------------------------------------------------------------------------

    def job_ended(self, job: Job) -> None:
        """A job being watched has just ended: say how, and what to do next when the caller said."""
        text = f"job {job.id} ended {job.state}: {job.reason}"
        severity = "information" if job.state == "SUCCEEDED" else "error"
        self.notify(text + (f"; {self.on_job_end}" if self.on_job_end else ""), severity=severity, timeout=60)

    def open_job(self, job_id: int) -> None:
        self.push_screen(JobScreen(int(job_id)))

    def action_submit(self) -> None:
        def submitted(job: Job | None) -> None:
            if job:
                self._changed(f"submitted job {job.id} ({job.name}): {job.state}")

        self.push_screen(SubmitScreen(), submitted)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_command_line(self) -> None:
        self.push_screen(CommandLine(), lambda text: text and self.run_command(text))

    def run_command(self, text: str) -> None:
        """Run one `:` command (also what the palette calls)."""
        try:
            cmd = commands.parse(text)
        except UserError as e:
            self.notify(e.sentence(), severity="error")
            return
        getattr(self, f"cmd_{cmd.name}")(*cmd.args)

    def cmd_cluster(self) -> None:
        self.switch_mode("cluster")

    def cmd_queue(self) -> None:
        self.switch_mode("queue")

    def cmd_datasets(self) -> None:
        self.switch_mode("datasets")

    def cmd_events(self) -> None:
        self.switch_mode("events")

    def cmd_job(self, ref: str) -> None:
        self._find_job(ref, self.open_job)

    def cmd_submit(self) -> None:
        self.action_submit()

    def cmd_cancel(self, ref: str) -> None:
        self._find_job(ref, self.confirm_cancel)

    def cmd_drain(self, host: str) -> None:
        self.set_draining(host, True)

    def cmd_undrain(self, host: str) -> None:
        self.set_draining(host, False)

    def cmd_sync(self, ref: str) -> None:
        self.data_action("sync", ref)

    def cmd_verify(self, ref: str) -> None:
        self.data_action("verify", ref)

    def cmd_filter(self, text: str) -> None:
        from .widgets.filter_bar import FilterBar

        bars = self.screen.query(FilterBar)
        if bars:
            bars.first().open()
            bars.first().value = text
        else:
            self.notify("this screen has no filter", severity="warning")

    def cmd_help(self) -> None:
        self.action_help()

    def cmd_quit(self) -> None:
        self.exit()

    @work(thread=True, group="find", exit_on_error=False)
    def _find_job(self, ref: str, then: Callable[[int], Any]) -> None:
        job = self.db.call(jobs.find, ref)
        self.call_from_thread(then, job.id)

    # --- actions ------------------------------------------------------------------------------

    @work(thread=True, group="cancel", exit_on_error=False)
    def confirm_cancel(self, job_id: int) -> None:
        detail = self.db.call(queries.job_detail, job_id)
        if detail is None:
            raise UserError(f"job {job_id} not found", "it is not in the store", "check the queue")
        if detail.job.terminal:
            self.call_from_thread(self.notify, f"job {job_id} already ended: {detail.job.state}")
            return
        self.call_from_thread(self.push_screen, ConfirmCancel(detail), lambda yes: yes and self.cancel(job_id))

    @work(thread=True, group="cancel", exit_on_error=False)
    def cancel(self, job_id: int) -> None:
        """Cancel as the CLI does (scheduler.control): while a loop holds the lease, it acts on the
        intent and this waits for it; with none, the verified teardown runs from here."""
        worker = get_current_worker()

        def here(_: int) -> None:
            self.call_from_thread(self.notify, f"job {job_id}: no scheduler loop is running; stopping it from here")

        self.call_from_thread(self.notify, f"job {job_id}: cancelling")
        [outcome] = self.write(lambda store: control.cancel(
            store, self.inventory, [job_id], on_here=here, should_stop=lambda: worker.is_cancelled))  # the console may quit
        if not worker.is_cancelled:
            self.call_from_thread(self._cancelled, outcome)

    def _cancelled(self, outcome: control.CancelOutcome) -> None:
        """Say how a cancel ended: verified, or per host what is still there or why it did not answer."""
        j = outcome.job_id
        if outcome.verified:
            self._changed(outcome.sentence(), title=f"job {j}: cancel verified")
        elif outcome.done and not outcome.left:  # it ended on its own before the cancel took effect
            self._changed(outcome.sentence(), title=f"job {j} ended {outcome.state}", severity="warning")
        else:
            lines = [f"{r.host}: did not answer ({r.error})" if r.error else f"{r.host}: still runs {', '.join(r.left)}"
                     for r in outcome.left]
            self._changed("\n".join(lines or [outcome.sentence()]), title=f"job {j}: cancel NOT verified",
                          severity="error", timeout=60)

    @work(thread=True, group="drain", exit_on_error=False)
    def set_draining(self, host: str, draining: bool | None) -> None:
        """Drain or undrain a host; None toggles what the store says now (not what a screen last saw)."""
        from scheduler import hosts

        self.inventory.host(host)  # a UserError naming the known hosts

        def change(store: Store) -> bool:
            want = draining
            if want is None:
                row = store.one("SELECT draining FROM hosts WHERE name = ?", (host,))
                want = not (row and row["draining"])
            hosts.set_draining(store, self.inventory, host, want)
            return want

        now_draining = self.write(change)
        self.call_from_thread(self._changed, f"{host}: {'draining' if now_draining else 'accepting jobs again'}")

    def _changed(self, message: str, **notify: Any) -> None:
        """After an action: say what changed and re-read the screen at once rather than on its timer."""
        self.notify(message, **notify)
        poll = getattr(self.screen, "poll", None)
        if poll is not None:
            poll()

    @work(thread=True, group="data", exit_on_error=False)
    def data_action(self, kind: str, ref: str) -> None:
        """Sync a dataset version to every host, or verify every host's copy; placements update live."""
        from scheduler.data import versions

        row = self.db.call(versions.resolve, ref)
        ref = f"{row['name']}@{row['version']}"
        self.call_from_thread(self.notify, f"{ref}: {kind} started on {len(self.inventory.hosts)} host(s)")
        if kind == "sync":
            from scheduler.data.sync import sync as act
        else:
            from scheduler.data.verify import verify as act
        results = self.write(lambda store: act(store, self.executor, list(self.inventory.hosts), row))
        states: dict[str, int] = {}
        for r in results:
            states[r.state] = states.get(r.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        self.call_from_thread(self._changed, f"{ref}: {kind} done: {summary}")


def build_app(inventory: Inventory, *, embedded_loop: bool | None = None, mode: str = "queue",
              job: int | None = None, on_job_end: str | None = None) -> HeadnodeApp:
    """The console for this inventory. embedded_loop: None runs the loop here when no other loop
    holds the lease, True always tries, False never (read and write intents only). job: open on
    that job; on_job_end: a hint added to the notice when a watched job ends."""
    return HeadnodeApp(inventory, embedded_loop=embedded_loop, mode=mode, job=job, on_job_end=on_job_end)

"""Following a job from the console: its merged logs in a background thread, its metrics by offset.

No Textual here. Lines and metrics are handed over through plain buffers that the job screen drains
on its own poll, so a chatty job costs one repaint per poll, not one per line.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from scheduler import logs
from scheduler.execute import Executor
from scheduler.inventory import Inventory
from scheduler.store import Store
from trainer.metrics import FILE as METRICS_FILE
from trainer.metrics import step_lines

# Runs on the host: print PATH from byte OFFSET (nothing when it does not exist yet).
READ_FROM_CODE = """
import sys
path, offset = sys.argv[1], int(sys.argv[2])
try:
    f = open(path, "rb")
except OSError:
    sys.exit(0)
f.seek(offset)
sys.stdout.write(f.read().decode("utf-8", "replace"))
"""


class LogFollower:
    """Streams `logs.follow` for one job into `lines` until the job has ended or `stop()`."""

    def __init__(self, state_dir: Path, inventory: Inventory, job_id: int, *, keep: int = 50_000) -> None:
        self.lines: deque[logs.Line | str] = deque(maxlen=keep)  # str: a warning about a node
        self._stop = threading.Event()
        self._args = (state_dir, inventory, job_id)
        # A daemon thread: a follow blocks until the next line, and must not hold up the console's exit.
        self._thread = threading.Thread(target=self._run, name=f"follow-job-{job_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def drain(self) -> list[logs.Line | str]:
        out = []
        while self.lines:
            out.append(self.lines.popleft())
        return out

    def _run(self) -> None:
        state_dir, inventory, job_id = self._args
        store, executor = Store.for_state_dir(state_dir), Executor(inventory)
        try:
            for line in logs.follow(store, executor, inventory, job_id, warn=self.lines.append):
                if self._stop.is_set():
                    return
                self.lines.append(line)
        except Exception as e:  # the follow is a view: say why it stopped, never crash the console
            self.lines.append(f"log follow stopped: {e}")
        finally:
            executor.close()
            store.close()


def read_metrics(executor: Executor, inventory: Inventory, host: str, run_dir: str, offset: int) -> tuple[list[dict], int]:
    """Complete metrics lines written since byte `offset` of rank 0's metrics file, and the new offset."""
    r = executor.python(inventory.host(host), READ_FROM_CODE, [f"{run_dir}/{METRICS_FILE}", str(offset)], timeout=10)
    if not r.ok:
        return [], offset
    text = r.stdout[: r.stdout.rfind("\n") + 1]  # a torn last line is read again next time
    return step_lines(text.splitlines()), offset + len(text.encode())

"""The console's one reading connection, owned by one thread.

sqlite3 connections must stay in the thread that opened them, and Textual's thread workers run on a
shared pool, so the pollers hand their reads to this thread instead of each opening a Store.
Writes (actions) open their own Store in their own worker: they are rare and may wait on SSH.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from collections.abc import Callable

from scheduler.store import Store, StoreGone


class StoreThread:
    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-store")

    def _store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = Store.for_state_dir(self._state_dir, actor=None)
        return store

    def call(self, fn: Callable[[Store], Any], *args: Any) -> Any:
        """Run fn(store, *args) on the store thread and wait for its result (from a worker thread).
        A store file that vanished or changed since the last read raises StoreGone rather than
        showing what the old file held; the next call opens the store again (once it is restored)."""
        return self._pool.submit(self._run, fn, *args).result()

    def _run(self, fn: Callable[[Store], Any], *args: Any) -> Any:
        store = self._store()
        try:
            store.check()
        except StoreGone:
            store.close()
            self._local.store = None
            raise
        return fn(store, *args)

    def close(self) -> None:
        def close() -> None:
            store = getattr(self._local, "store", None)
            if store is not None:
                store.close()
                self._local.store = None

        self._pool.submit(close).result()
        self._pool.shutdown()

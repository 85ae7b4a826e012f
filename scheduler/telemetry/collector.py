"""The collector: one sampler stream per host, batched into the store, hosts marked up and down.

It runs inside the scheduler loop's process (`scheduler run` or the console's embedded loop):
`Collector(inventory).start()` ... `.stop()`. Each remote host gets a thread that keeps a sampler
streaming over its SSH connection (reconnecting with backoff); a `localhost` host is sampled
in-process. One writer thread drains what arrived every interval into one transaction, marks a host
down after `down_after` seconds of silence (and up on its next sample), folds old history once a
minute and checks running jobs for hangs.

`top` uses the same class with `store=False` for a live view when no loop is collecting, and
`sample_once` for a single round trip per host.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

from ..hosts import sync_inventory
from ..execute import Executor, HostUnreachable, python_argv
from ..inventory import Host, Inventory
from ..remote import source
from ..remote.sampler import Sampler
from ..store import Store, StoreGone
from . import hang
from .ingest import Received, downsample, ingest, mark_host

log = logging.getLogger("headnode.telemetry")

BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
RETENTION_EVERY = 60.0
HANG_CHECK_EVERY = 5.0  # hang_after is minutes in practice; reading every job's evidence each second is waste


def sampler_argv(host: Host, interval: float, *, once: bool = False) -> list[str]:
    argv = python_argv(host, source("sampler.py"), ["--interval", f"{interval:g}", "--workdir", host.path()], flags=["-u"])
    return [*argv, "--once"] if once else argv


def parse(line: str) -> dict | None:
    """A sample, or None for anything else on stdout (a warning printed by the host's python)."""
    try:
        sample = json.loads(line)
    except ValueError:
        return None
    return sample if isinstance(sample, dict) and "host" in sample else None


class Collector:
    def __init__(self, inventory: Inventory, *, store: bool = True, executor: Executor | None = None):
        self.inventory = inventory
        self.settings = inventory.settings
        self.write_store = store
        self._own_executor = executor is None
        self.executor = executor or Executor(inventory)
        self._queue: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, object] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}
        self._started_at = 0.0
        self._idle_since: dict[tuple[str, int], float] = {}
        self._last_retention = self._last_hang_check = 0.0
        # The present, for readers in this process (`top` without a store): the newest sample per
        # host, and the up/down state the writer decided.
        self.latest: dict[str, Received] = {}
        self.state: dict[str, tuple[str, str]] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Collector:
        self._started_at = time.time()
        for host in self.inventory.hosts:
            target = self._local if host.is_local else self._remote
            self._spawn(target, host, name=f"telemetry-{host.name}")
        self._spawn(self._writer, name="telemetry-writer")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            s.close()  # unblocks the reader; the remote sampler sees EOF on stdin and exits
        for t in self._threads:
            t.join(timeout)
        if self._own_executor:
            self.executor.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, target, *args, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # --- readers: one per host ----------------------------------------------------------------

    def receive(self, host: str, sample: dict, now: float | None = None) -> None:
        """Queue one sample for the writer (readers call it; benchmarks feed synthetic streams)."""
        now = time.time() if now is None else now
        self._last_seen[host] = now
        self.latest[host] = r = Received(host, now, sample)
        self._queue.put(r)

    def _local(self, host: Host) -> None:
        sampler = Sampler(host.path())
        while not self._stop.wait(self.settings.telemetry_interval):
            try:
                self.receive(host.name, sampler.sample())
            except Exception as e:  # the host turns down with this reason rather than the thread dying
                self._errors[host.name] = f"sampling failed: {type(e).__name__}: {e}"

    def _remote(self, host: Host) -> None:
        argv = sampler_argv(host, self.settings.telemetry_interval)
        backoff = BACKOFF_MIN
        while not self._stop.is_set():
            try:
                # A cut link shows as silence, so reads time out and the stream is opened afresh.
                stream = self.executor.stream(host, argv, read_timeout=self.settings.down_after)
            except HostUnreachable as e:
                self._errors[host.name] = str(e)
            else:
                with self._lock:
                    self._streams[host.name] = stream
                try:
                    for line in stream:
                        sample = parse(line)
                        if sample is not None:
                            self.receive(host.name, sample)
                            backoff = BACKOFF_MIN
                    self._errors[host.name] = "the sampler exited (is the host's python able to run it?)"
                except Exception as e:  # HostUnreachable, or the transport failing under us
                    self._errors[host.name] = str(e) or type(e).__name__
                finally:
                    with self._lock:
                        self._streams.pop(host.name, None)
                    stream.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    # --- the writer ---------------------------------------------------------------------------

    def _writer(self) -> None:
        store = Store.for_state_dir(self.inventory.state_dir, actor="telemetry") if self.write_store else None
        if store is not None:
            sync_inventory(store, self.inventory)
            self.state = {r["name"]: (r["state"], r["reason"] or "") for r in store.query("SELECT name, state, reason FROM hosts")}
        try:
            while not self._stop.wait(self.settings.telemetry_interval):
                try:
                    self.tick(store, time.time())
                except StoreGone as e:  # the store file went: nothing more is written to it
                    log.error("telemetry stopped writing: %s", e.sentence())
                    return
                except Exception:  # a busy store or a bad sample must not end telemetry for good
                    log.exception("telemetry write failed")
        finally:
            if store is not None:
                store.close()

    def tick(self, store: Store | None, now: float) -> int:
        """One writer step: ingest, up/down, hang checks, and retention once a minute."""
        written = self.flush(store, now)
        if store is not None:
            if now - self._last_hang_check >= min(HANG_CHECK_EVERY, self.settings.hang_after / 10):
                hang.check_hangs(store, self.settings, now)
                self._last_hang_check = now
            if now - self._last_retention >= RETENTION_EVERY:
                downsample(store, self.settings.raw_retention, self.settings.minute_retention, now)
                self._last_retention = now
        return written

    def flush(self, store: Store | None, now: float) -> int:
        """Ingest what arrived and record up/down changes; returns the rows written."""
        batch: list[Received] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        written = ingest(store, batch, self._idle_since) if store is not None and batch else 0
        for host in self.inventory.hosts:
            change = self._transition(host.name, now)
            if change is not None:
                self.state[host.name] = change
                if store is not None:
                    mark_host(store, host.name, *change)
        return written

    def _transition(self, name: str, now: float) -> tuple[str, str] | None:
        current = self.state.get(name, ("unknown", ""))[0]
        last = self._last_seen.get(name)
        silent = now - (last if last is not None else self._started_at)
        if last is not None and silent <= self.settings.down_after:
            return ("up", "telemetry streaming") if current != "up" else None
        if silent > self.settings.down_after and current != "down":
            error = self._errors.get(name)
            return "down", f"no telemetry for {silent:.0f} s" + (f": {error}" if error else "")
        return None


def sample_once(inventory: Inventory, executor: Executor, hosts: list[Host], timeout: float = 20.0) -> dict[str, Received | str]:
    """One sample per host in one round trip each (in parallel): a Received, or why there is none."""
    out: dict[str, Received | str] = {}
    remote = [h for h in hosts if not h.is_local]
    results = executor.run_many(remote, lambda h: sampler_argv(h, 0.25, once=True), timeout=timeout) if remote else {}
    for h in hosts:
        if h.is_local:
            sampler = Sampler(h.path())
            time.sleep(0.25)  # CPU percent needs a window
            out[h.name] = Received(h.name, time.time(), sampler.sample())
            continue
        r = results[h.name]
        sample = next((s for s in map(parse, r.stdout.splitlines()) if s is not None), None) if r.ok else None
        out[h.name] = Received(h.name, time.time(), sample) if sample else (r.reason or "the sampler printed nothing")
    return out

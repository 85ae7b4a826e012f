"""The scheduler lease: one loop acts at a time.

A row in the store's `lease` table names the holder and when its claim runs out. The holder renews it
every cycle; a loop that dies (kill -9, a lost terminal) simply stops renewing, and the next loop may
take over once `expires_at` has passed -- or at once, when the holder ran on this machine and its
process is gone (holders are `pid@hostname`, so `cancel` or the console after a crashed loop on the
head need not wait out the ttl). Taking and renewing happen inside BEGIN IMMEDIATE transactions, so
two loops starting at the same instant cannot both win.
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass

from .errors import UserError
from .store import Store, StoreGone, dumps, loads

NAME = "scheduler"
_HOLDER_RE = re.compile(r"(\d+)@([^/]+)(?:/.*)?")  # pid@hostname, with an optional /role (teardown's "/cancel")


@dataclass(frozen=True)
class Lease:
    holder: str
    kind: str  # "foreground" | "console" | "cancel"
    acquired_at: float
    expires_at: float
    last_cycle_at: float | None
    last_cycle: dict | None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at or self.dead_holder() is not None

    def dead_holder(self) -> str | None:
        """Why the holder is known to be gone (its process on this machine no longer exists), else None.
        A holder on another machine, or a pid that lives (even if reused), waits out expires_at."""
        m = _HOLDER_RE.fullmatch(self.holder)
        if m is None or m[2] != socket.gethostname() or _alive(int(m[1])):
            return None
        return f"its process {m[1]} on this machine is gone"

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        since = time.strftime("%H:%M:%S", time.localtime(self.acquired_at))
        s = f"{self.holder} ({self.kind}) since {since}"
        if self.last_cycle_at is not None:
            s += f", last cycle {max(0.0, now - self.last_cycle_at):.1f} s ago"
        return s


class LeaseHeld(UserError):
    exit_code = 1


def holder_id() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:  # a zombie (killed, not yet reaped by its parent) still answers kill(0) but runs no loop
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def current(store: Store) -> Lease | None:
    """The lease row as stored, expired or not (None if no loop ever ran)."""
    row = store.one("SELECT * FROM lease WHERE name = ?", (NAME,))
    if row is None:
        return None
    return Lease(
        holder=row["holder"],
        kind=row["kind"],
        acquired_at=row["acquired_at"],
        expires_at=row["expires_at"],
        last_cycle_at=row["last_cycle_at"],
        last_cycle=loads(row["last_cycle"]),
    )


def active(store: Store, now: float | None = None) -> Lease | None:
    """The lease if someone holds it right now."""
    lease = current(store)
    return lease if lease is not None and not lease.expired(now) else None


def acquire(store: Store, holder: str, kind: str, ttl: float, *, now: float | None = None) -> Lease:
    """Take the lease, or raise LeaseHeld naming who has it. Re-acquiring our own lease renews it."""
    now = time.time() if now is None else now
    with store.tx():
        lease = current(store)
        if lease is not None and lease.holder != holder and not lease.expired(now):
            raise LeaseHeld(
                "another scheduler loop is running",
                f"the lease is held by {lease.describe(now)}",
                "stop that one first, or let it do the work (`headnode scheduler status` shows it)",
            )
        store.execute(
            "INSERT INTO lease (name, holder, kind, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, kind = excluded.kind, "
            "acquired_at = excluded.acquired_at, expires_at = excluded.expires_at, "
            "last_cycle_at = NULL, last_cycle = NULL",
            (NAME, holder, kind, now, now + ttl),
        )
        if lease is None or lease.holder == holder:
            what, why = "acquired", f"{holder} ({kind})"
        elif (dead := lease.dead_holder()) is not None and now < lease.expires_at:
            what, why = "took over a dead holder's lease", f"{holder} ({kind}) from {lease.holder}: {dead}"
        else:
            what, why = "took over an expired lease", f"{holder} ({kind}) from {lease.holder}"
        store.event(f"lease:{NAME}", what, why)
    return current(store)


def renew(store: Store, holder: str, ttl: float, *, last_cycle: dict | None = None, now: float | None = None) -> bool:
    """Extend our claim; False if we no longer hold it (it expired and another loop took it)."""
    now = time.time() if now is None else now
    with store.tx():
        if last_cycle is None:
            cur = store.execute(
                "UPDATE lease SET expires_at = ? WHERE name = ? AND holder = ?", (now + ttl, NAME, holder)
            )
        else:
            cur = store.execute(
                "UPDATE lease SET expires_at = ?, last_cycle_at = ?, last_cycle = ? WHERE name = ? AND holder = ?",
                (now + ttl, now, dumps(last_cycle), NAME, holder),
            )
    return cur.rowcount == 1


def release(store: Store, holder: str) -> None:
    """Give the lease up now (a clean stop), so the next loop need not wait for it to expire."""
    with store.tx():
        cur = store.execute("UPDATE lease SET expires_at = ? WHERE name = ? AND holder = ?", (time.time(), NAME, holder))
        if cur.rowcount:
            store.event(f"lease:{NAME}", "released", holder)


class Keeper:
    """Keeps a held lease alive from a thread of its own, every ttl/3, whatever the holder is doing:
    a teardown that waits out a long grace period, or a slow start, must not let the lease lapse
    while the work is half done (another loop would start acting on the same jobs). `lost` is set
    once a renewal finds the lease taken; the holder checks it between steps and stops at once."""

    def __init__(self, path, holder: str, ttl: float):
        import threading

        self.holder, self.ttl = holder, ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), name="lease-keeper", daemon=True)

    def __enter__(self) -> Keeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ttl)

    def _run(self, path) -> None:
        try:
            store = Store(path, actor=self.holder)  # a connection of its own: sqlite3 stays per thread
        except StoreGone:
            return  # the store went before this thread opened it: the holder's own check says so
        with store:
            while not self._stop.wait(self.ttl / 3):
                try:
                    if not renew(store, self.holder, self.ttl):
                        self.lost.set()
                        return
                except Exception:  # a busy or briefly failing store: try again at the next tick
                    continue


def wait_for_cancel(store: Store, holder: str, kind: str, ttl: float, *, timeout: float, note=None) -> Lease:
    """acquire(), but a lease held by a cancel in progress (a CLI-driven teardown, kind "cancel") is
    waited for up to `timeout` instead of refused: it ends by itself once its hosts are verified.
    `note(lease)` is called once when the wait begins."""
    deadline = time.monotonic() + timeout
    noted = False
    while True:
        try:
            return acquire(store, holder, kind, ttl)
        except LeaseHeld:
            held = active(store)
            if held is None:
                continue
            if held.kind != "cancel" or time.monotonic() >= deadline:
                raise
            if not noted and note is not None:
                note(held)
                noted = True
            time.sleep(0.2)

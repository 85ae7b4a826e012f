"""The store: one SQLite file (WAL) under the state dir, the single source of truth.

A store has an identity: a random id and its creation time (the `meta` table), written once by the
migration that creates it, and kept beside the file in a small marker (`headnode.store-id` next to
`headnode.db`). A state dir whose marker names a store but whose file is missing or empty (0 bytes),
or holds another store, is an error with the fix (StoreGone), never silently a new empty store: only
a state dir without a marker gets a new store (`created` is then true, for the caller to say so once),
and `headnode store init --force` (`init` below) starts over explicitly. A Store also notices when
the file it opened is deleted, replaced or emptied under it (`check`, and before every write): it
never writes to a file that is no longer the store.

Every state change is one `with store.tx():` block that also appends to `events`. Writers use
BEGIN IMMEDIATE: under WAL a deferred transaction that reads then writes fails at once with
"database is locked", which the busy timeout cannot help (FIELD-NOTES: 55-75 % lost vs none).

One Store per thread: sqlite3 connections must not cross threads. The console's workers and the
loop each open their own.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sqlite3
import time
from pathlib import Path
from functools import cached_property
from dataclasses import dataclass
from typing import Any, NoReturn
from collections.abc import Iterator

from .errors import UserError

DB_NAME = "headnode.db"
MARKER_SUFFIX = ".store-id"  # headnode.db -> headnode.store-id beside it: which store this state dir holds
BUSY_TIMEOUT_MS = 30_000

RESTORE_FIX = (
    "stop every headnode process, then restore it from a backup, or run `headnode store init --force` to start"
    " a new one (jobs still running on hosts are not known to it)"
)
OTHER_FIX = (
    "put this state dir's own store back (restore it from a backup), or run `headnode store init --force` to"
    " make this state dir use the one there"
)

# Migrations run in order; user_version records how many have been applied. Append, never edit.
MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'unknown',      -- up | down | unknown (reachability)
        draining INTEGER NOT NULL DEFAULT 0,        -- 1: place no new jobs here
        reason TEXT,                                -- why down / why draining
        last_seen REAL,
        probed_at REAL,
        probe TEXT,                                 -- JSON: the last probe result
        gpus_detected INTEGER
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        state TEXT NOT NULL,                        -- PENDING STARTING RUNNING SUCCEEDED FAILED CANCELLED TIMEOUT
        reason TEXT NOT NULL DEFAULT '',
        command TEXT NOT NULL,                      -- JSON list: what torchrun runs on every node
        nodes INTEGER NOT NULL,
        gpus_per_node INTEGER NOT NULL,
        data TEXT,                                  -- NAME@VERSION or NULL
        priority INTEGER NOT NULL DEFAULT 0,
        time_limit REAL,                            -- seconds, NULL = none
        retries INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,         -- current/last attempt number (1-based once started)
        env TEXT NOT NULL DEFAULT '{}',             -- JSON object
        tags TEXT NOT NULL DEFAULT '[]',            -- JSON list: required host tags
        user TEXT,
        submitted_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        metrics TEXT,                               -- JSON: the newest metrics line
        metrics_at REAL,
        progress_at REAL,                           -- last time logs or metrics advanced
        flags TEXT NOT NULL DEFAULT '[]'            -- JSON list: e.g. ["hang"]
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_name ON jobs(name);
    CREATE TABLE attempts (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        started_at REAL,
        ended_at REAL,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE TABLE job_nodes (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        node_rank INTEGER NOT NULL,
        host TEXT NOT NULL,
        gpus TEXT NOT NULL DEFAULT '[]',            -- JSON list of GPU indices on that host
        port INTEGER,
        run_dir TEXT,                               -- on the host
        data_path TEXT,                             -- on the host
        pid INTEGER,                                -- of the detached wrapper / process group leader
        state TEXT NOT NULL DEFAULT 'PENDING',      -- PENDING STARTING RUNNING EXITED LOST
        exit_code INTEGER,
        log_offset INTEGER NOT NULL DEFAULT 0,
        last_seen REAL,
        PRIMARY KEY (job_id, attempt, node_rank)
    );
    CREATE INDEX job_nodes_host ON job_nodes(host, state);
    CREATE TABLE datasets (
        name TEXT NOT NULL,
        version TEXT NOT NULL,                      -- first 12 hex of hash
        hash TEXT NOT NULL,
        path TEXT NOT NULL,                         -- on the head node
        tokenizer TEXT NOT NULL,                    -- JSON
        vocab_size INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        shards INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        manifest TEXT NOT NULL,                     -- JSON: the whole manifest
        sources TEXT NOT NULL DEFAULT '[]',         -- JSON lineage: [{path, bytes, sha256}]
        created_at REAL NOT NULL,
        author TEXT,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE data_placements (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL,                        -- absent syncing verified corrupt
        detail TEXT,                                -- e.g. which shard is corrupt, sync progress
        updated_at REAL NOT NULL,
        PRIMARY KEY (name, version, host)
    );
    CREATE TABLE samples (                          -- telemetry history: append-only, downsampled
        ts REAL NOT NULL,
        host TEXT NOT NULL,
        gpu INTEGER NOT NULL,                       -- -1: the host itself
        resolution INTEGER NOT NULL DEFAULT 1,      -- seconds per sample (1 raw, 60 per-minute ...)
        util REAL, mem_used REAL, mem_total REAL, temp REAL, power REAL, cpu_percent REAL, mem_percent REAL
    );
    CREATE INDEX samples_ts ON samples(ts);         -- ts only: a (host,gpu,ts) index grows the write cost
    CREATE TABLE latest (                           -- telemetry present: one row per host (gpu=-1) and GPU
        host TEXT NOT NULL,
        gpu INTEGER NOT NULL,
        ts REAL NOT NULL,
        sample TEXT NOT NULL,                       -- JSON as shown by `top --json`
        PRIMARY KEY (host, gpu)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,                        -- user@host, "scheduler", "console" ...
        object TEXT NOT NULL,                       -- "job:12", "host:gpu01", "data:wiki@abc123"
        what TEXT NOT NULL,                         -- "submitted", "RUNNING", "drained" ...
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_object ON events(object);
    CREATE TABLE lease (
        name TEXT PRIMARY KEY,                      -- "scheduler"
        holder TEXT NOT NULL,                       -- "pid@hostname"
        kind TEXT NOT NULL,                         -- "foreground" | "console"
        acquired_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_cycle_at REAL,
        last_cycle TEXT                             -- JSON: what the last cycle did
    );
    """,
    # 2: CPU processes per node, for zero-GPU jobs (NULL: one); a GPU job runs one process per GPU
    """
    ALTER TABLE jobs ADD COLUMN procs_per_node INTEGER;
    """,
    # 3: what the teardown found when an attempt ended (JSON list of per-host reports, model.Verdict)
    """
    ALTER TABLE attempts ADD COLUMN verdict TEXT;
    """,
    # 4: the store's identity: a random id (in job run dirs and markers on the hosts) and when it was made
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,                       -- store_id | created_at | cluster
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(8))));
    INSERT INTO meta (key, value) VALUES ('created_at', CAST((julianday('now') - 2440587.5) * 86400.0 AS TEXT));
    """,
]



def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): still say something
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


class Store:
    """A thin layer over sqlite_utils.Database: schema, transactions, events, JSON columns.

    `adopt`: take the file at path as this state dir's store whatever the marker says (only
    `headnode store init --force` does). `cluster`: the cluster's name, recorded once in the store."""

    def __init__(self, path: str | os.PathLike, *, actor: str | None = None, cluster: str | None = None,
                 adopt: bool = False):  # fmt: skip
        self.path = Path(path)
        self.actor = actor or default_actor()
        self._depth = 0
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file this Store opened
        self._sized = False  # ... and it was not empty then
        self.created = False  # this Store made the file a new store (its caller says so, once)
        self.gone: StoreGone | None = None  # set once the file vanished or changed under this Store
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise fault(e, self.path) from None
        known = None if adopt else read_marker(self.path)
        if known is not None:
            size = _size(self.path)
            if not size:  # SQLite would make a new empty store of a missing or empty file
                raise StoreGone(f"the store {self.path} is {'missing' if size is None else 'empty (0 bytes)'}",
                                f"this state dir held {known.describe()}", RESTORE_FIX)  # fmt: skip
        conn = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
            )
            conn.row_factory = sqlite3.Row
            self.conn = conn
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            _wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(cluster)
            self.identity = self._read_identity()
            st = os.stat(self.path)
            self._file = (st.st_dev, st.st_ino)
            self._sized = st.st_size > 0  # (switching to WAL writes the header: a store file is never empty)
            if known is not None and known.store_id != self.identity.store_id:
                raise StoreGone(f"the store {self.path} is another store ({self.identity.describe()})",
                                f"this state dir held {known.describe()}", OTHER_FIX)  # fmt: skip
            if cluster and self.identity.cluster is None:  # made by a caller that did not know the cluster's name
                with self.tx():
                    self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('cluster', ?)", (cluster,))
                self.identity = self._read_identity()
        except BaseException as e:
            if conn is not None:
                conn.close()  # a half-open store must not hold the file (or a mount) open
            if not isinstance(e, (OSError, sqlite3.Error)):
                raise
            err = fault(e, self.path)
            if err is None:
                raise
            raise err from None
        if known != self.identity:
            write_marker(self.path, self.identity)

    @property
    def id(self) -> str:
        """The store's id: in every job's run dir and environment on the hosts (launch.py)."""
        return self.identity.store_id

    def _read_identity(self) -> Identity:
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        return Identity(meta["store_id"], float(meta["created_at"]), meta.get("cluster"))

    def check(self) -> None:
        """Raise StoreGone if the file at path is no longer the store this opened: deleted or moved
        away, replaced by another file, emptied, or holding another store's id. A stat and a one-row
        read: cheap enough for every scheduler cycle. Writes check the file (not the id) themselves."""
        self._guard()
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        except sqlite3.Error as e:
            self._lost(f"can no longer be read ({e})")
        if row is None or row[0] != self.id:
            self._lost(f"now holds another store ({row[0] if row else 'without an id'})")

    def intact(self) -> bool:
        """The file at path is still the one this Store opened, and not empty (a stat, no read)."""
        try:
            self._guard()
        except StoreGone:
            return False
        return True

    def _guard(self) -> None:
        """Raise StoreGone if the file at path is not the file this Store opened, or is empty."""
        if self.gone is not None:
            raise self.gone
        if self._file is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._lost("was deleted or moved away")
        except OSError:
            return  # not for us to judge (a permission change): SQLite says what it is, if anything
        if (st.st_dev, st.st_ino) != self._file:
            self._lost("was replaced by another file")
        if st.st_size == 0 and self._sized:
            self._lost("was emptied (0 bytes)")

    def _lost(self, how: str) -> NoReturn:
        self.gone = StoreGone(
            f"the store {self.path} {how} while this process had it open",
            f"it held {self.identity.describe()}; nothing more is written to it, and the jobs on the hosts keep running",
            RESTORE_FIX,
        )
        raise self.gone

    @cached_property
    def db(self):
        """sqlite_utils over the same connection, built on first use: importing sqlite_utils pulls in
        numpy (~150 ms), which read-only CLI commands should not pay."""
        import sqlite_utils

        return sqlite_utils.Database(self.conn)

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike, **kw) -> Store:
        return cls(Path(state_dir) / DB_NAME, **kw)

    def close(self) -> None:
        # SQLite's last connection copies the WAL into the file as it closes: into a file emptied under
        # it, that makes a damaged store of an empty one. Leave an emptied file empty (a restore
        # copies over it; the -wal went with the close).
        emptied = self._file is not None and not self.intact() and _same_empty(self.path, self._file)
        self.conn.close()
        if emptied and _same_file(self.path, self._file):
            with contextlib.suppress(OSError):
                os.truncate(self.path, 0)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- schema -------------------------------------------------------------------------------

    def _migrate(self, cluster: str | None) -> None:
        current = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if current >= len(MIGRATIONS):
            return
        with self.tx():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for i in range(current, len(MIGRATIONS)):
                for stmt in _statements(MIGRATIONS[i]):
                    self.conn.execute(stmt)
            if current < len(MIGRATIONS):
                self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
                if cluster:
                    self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('cluster', ?)", (cluster,))
            self.created = current == 0

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # --- transactions and events --------------------------------------------------------------

    @contextlib.contextmanager
    def tx(self) -> Iterator[Store]:
        """A write transaction (BEGIN IMMEDIATE). Nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._guard()  # never write to a file that is no longer this store
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            if self.conn.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                self.conn.execute("ROLLBACK")
            raise
        else:
            self._depth = 0
            self.conn.execute("COMMIT")

    def event(self, object: str, what: str, reason: str = "", *, actor: str | None = None) -> None:
        """Append to the audit trail; call inside the tx() that made the change."""
        self.conn.execute(
            "INSERT INTO events (ts, actor, object, what, reason) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor or self.actor, object, what, reason or ""),
        )

    # --- small helpers --------------------------------------------------------------------------

    def query(self, sql: str, params: Any = ()) -> list[dict]:
        return [dict(r) for r in self.conn.execute(sql, params).fetchall()]

    def one(self, sql: str, params: Any = ()) -> dict | None:
        r = self.conn.execute(sql, params).fetchone()
        return dict(r) if r is not None else None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)


# --- starting a store explicitly ------------------------------------------------------------------


@dataclass(frozen=True)
class Init:
    identity: Identity
    what: str  # created | exists | adopted
    moved: tuple[str, ...] = ()  # files moved aside for a new store

    def sentence(self, path: Path) -> str:
        i = self.identity
        if self.what == "exists":
            return f"the store at {path} is this state dir's store already ({i.describe()}); nothing changed"
        if self.what == "adopted":
            return f"this state dir now uses the store at {path} ({i.describe()})"
        aside = f" (the old files are kept as {', '.join(self.moved)})" if self.moved else ""
        return created_sentence(path, i) + aside


def created_sentence(path: str | os.PathLike, identity: Identity) -> str:
    """What is said, once, when a state dir gets a new store."""
    return f"created a new store at {path} for cluster {identity.cluster or '?'} (id {identity.store_id})"


def init(path: str | os.PathLike, *, cluster: str | None = None, force: bool = False) -> Init:
    """`headnode store init [--force]`. Without force: make the store where none was (what any first
    command does too), else open it and say which it is (a missing or empty store stays an error).
    With force: a valid store file at path becomes this state dir's store (a foreign one is adopted);
    anything else there (missing, empty, not a store) is moved aside with its -wal and -shm files, and
    a new store is made. Jobs still running on hosts are not known to a new store."""
    path = Path(path)
    if not force:
        with Store(path, cluster=cluster) as s:
            return Init(s.identity, "created" if s.created else "exists")
    try:
        known = read_marker(path)
    except StoreError:
        known = None  # an unreadable marker is what --force is for
    if _size(path):
        try:
            with Store(path, cluster=cluster, adopt=True) as s:
                same = known is not None and known.store_id == s.id
                return Init(s.identity, "exists" if same else "adopted")
        except StoreError:
            pass  # not a store: moved aside below
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        old = Path(f"{path}{suffix}")
        if old.exists():
            new = Path(f"{path}.replaced-{stamp}{suffix}")
            old.rename(new)
            moved.append(new.name)
    with contextlib.suppress(FileNotFoundError):
        marker_path(path).unlink()
    with Store(path, cluster=cluster, adopt=True) as s:
        return Init(s.identity, "created" if s.created else "adopted", tuple(moved))


# --- faults ----------------------------------------------------------------------------------------


class StoreError(UserError):
    """The store file or its directory cannot be read or written: a full disk, a read-only file,
    a damaged file. One sentence naming the file and what to do; nothing was changed."""

    exit_code = 74  # EX_IOERR


class StoreGone(StoreError):
    """The store file is missing, empty or another store's where this state dir held a store, or it
    vanished or changed under a process that had it open: restore it, or start over explicitly."""


@dataclass(frozen=True)
class Identity:
    store_id: str
    created_at: float
    cluster: str | None = None

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created_at))
        of = f" of cluster {self.cluster}" if self.cluster else ""
        return f"store {self.store_id}{of}, created {when}"

    def as_dict(self) -> dict:
        return {"store_id": self.store_id, "created_at": self.created_at, "cluster": self.cluster}


def marker_path(db: str | os.PathLike) -> Path:
    db = Path(db)
    return db.with_name(db.stem + MARKER_SUFFIX)


def read_marker(db: str | os.PathLike) -> Identity | None:
    """The identity the marker beside `db` records, None when there is none (a fresh state dir, or a
    store from before identities: it gets one at its next open)."""
    path = marker_path(db)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        fix = f"make it readable for this user, or run `headnode store init --force` to adopt the store at {db}"
        raise StoreError(f"cannot read {path}, the marker of the store {db}", why, fix) from None
    try:
        d = json.loads(text)
        return Identity(str(d["store_id"]), float(d["created_at"]), d.get("cluster"))
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"{path}, the marker of the store {db}, is unreadable", "it is not the JSON headnode writes there",
                         f"run `headnode store init --force` to adopt the store at {db}") from None  # fmt: skip


def write_marker(db: str | os.PathLike, identity: Identity) -> None:
    """Record which store the state dir holds (atomically). Best effort: a state dir that cannot take
    the marker still works, only without the check, and the next open tries again."""
    path = marker_path(db)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")  # threads share a pid
    try:
        with open(tmp, "w") as f:
            json.dump({**identity.as_dict(), "path": str(Path(db).absolute())}, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes making a fresh store at once both try, and SQLite answers the
    one that must wait with an immediate "database is locked" (no busy handler for that lock): retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _same_file(path: Path, file: tuple[int, int]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == file


def _same_empty(path: Path, file: tuple[int, int]) -> bool:
    return _same_file(path, file) and _size(path) == 0


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
    except OSError:
        return 1  # not ours to judge here: SQLite's open says what is wrong


def fault(exc: BaseException, path: str | os.PathLike) -> StoreError | None:
    """The one sentence for an OS or SQLite failure on the store at path; None when exc is not one
    (a programming error stays an internal error)."""
    path = Path(path)
    where = path.parent
    if isinstance(exc, OSError):
        why = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):
            why = "a file is in the way of that directory"
        elif isinstance(exc, FileNotFoundError):  # mkdir -p fails so only on a virtual filesystem (/proc, /sys)
            why = f"that filesystem does not allow new directories ({why})"
        return StoreError(
            f"cannot create the state directory {where}",
            why,
            "set state_dir in [cluster] of hosts.toml (or $HEADNODE_STATE_DIR) to a directory this user can create and write",
        )
    if not isinstance(exc, sqlite3.Error):
        return None
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    io_error = name.startswith("SQLITE_IOERR") or "disk I/O error" in text
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text or (io_error and _full(where)):
        return StoreError(
            f"cannot write the store {path}",
            "the disk is full",
            f"free space on that filesystem (`df -h {where}`) and run the command again (the change that failed was not saved)",
        )
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StoreError(
            f"cannot write the store {path}",
            "it is read-only for this user (file mode, a read-only mount or an immutable file)",
            f"make it and {where} writable (`ls -l`, `lsattr`), or run headnode as the user who owns them",
        )
    if name.startswith("SQLITE_NOTADB") or "file is not a database" in text:
        return StoreError(
            f"the store {path} is not a SQLite database",
            "the file holds something else or was overwritten",
            f"restore it from a backup, or move it aside (`mv {path} {path}.bad`) and run `headnode store init --force`"
            " to start a new one",
        )
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return StoreError(
            f"the store {path} is damaged",
            "SQLite found a malformed page",
            f"stop every headnode process, then `sqlite3 {path} .recover | sqlite3 {path}.recovered` and move"
            " the recovered file into its place, or restore a backup",
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in text:
        return StoreError(f"cannot open the store {path}", *_cannot_open(path))
    if io_error:
        return StoreError(
            f"cannot read or write the store {path}",
            f"the disk reported an I/O error ({text})",
            "check the disk (`dmesg`) and its free space, then run the command again",
        )
    if name.startswith("SQLITE_BUSY") or "database is locked" in text:
        return StoreError(
            f"the store {path} stayed locked for {BUSY_TIMEOUT_MS // 1000} s",
            "another process holds a write transaction",
            "run the command again; if it persists, look for a hung headnode process (`fuser` on the file)",
        )
    return None


def _full(where: Path) -> bool:
    """A full filesystem shows as SQLITE_IOERR too (the -shm file cannot grow): ask it."""
    try:
        st = os.statvfs(where)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _cannot_open(path: Path) -> tuple[str, str]:
    """Why SQLite could not open path, and what to do (it says only "unable to open database file")."""
    where = path.parent
    fix = f"check {where} and its permissions, or point state_dir in hosts.toml at a directory this user can write"
    if path.is_dir():
        return "it is a directory", f"move {path} aside, or point state_dir in hosts.toml elsewhere"
    try:
        if os.statvfs(where).f_flag & os.ST_RDONLY:
            return (
                f"{where} is on a read-only filesystem (SQLite needs to create its -wal and -shm files there)",
                "remount it read-write, or copy the state dir somewhere writable and point state_dir in hosts.toml there",
            )
    except OSError as e:
        return f"{where}: {e.strerror or e}", fix
    if not os.access(where, os.W_OK | os.X_OK):
        return f"this user may not create files in {where} (SQLite needs its -wal and -shm files there)", fix
    if path.exists() and not os.access(path, os.R_OK):
        return "this user may not read it", fix
    return f"{where} does not accept a database file", fix


def _statements(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.executescript would COMMIT our transaction)."""
    out, buf = [], []
    for line in script.splitlines():
        line = line.split("--", 1)[0]
        buf.append(line)
        if line.rstrip().endswith(";") and sqlite3.complete_statement("\n".join(buf)):
            out.append("\n".join(buf).strip())
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return [s for s in out if s.strip(" ;\n")]


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def loads(text: str | None, default: Any = None) -> Any:
    return json.loads(text) if text else default



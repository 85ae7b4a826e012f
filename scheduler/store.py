"""The store: one SQLite file (WAL) under the state dir, the single source of truth.

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
from typing import Any
from collections.abc import Iterator

DB_NAME = "headnode.db"
BUSY_TIMEOUT_MS = 30_000

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
]



def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): still say something
        user = str(os.getuid())
    return f"{user}@{os.uname().nodename}"


class Store:
    """A thin layer over sqlite_utils.Database: schema, transactions, events, JSON columns."""

    def __init__(self, path: str | os.PathLike, *, actor: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
        )
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.actor = actor or default_actor()
        self._depth = 0
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

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
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        current = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if current >= len(MIGRATIONS):
            return
        with self.tx():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for i in range(current, len(MIGRATIONS)):
                for stmt in _statements(MIGRATIONS[i]):
                    self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

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
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
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



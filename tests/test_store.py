"""The store: schema on first use, transactions that either land whole or not at all."""

from __future__ import annotations

import pytest

from scheduler.store import MIGRATIONS, Store


def test_a_new_store_has_the_current_schema_and_reopening_keeps_it(tmp_path):
    s = Store.for_state_dir(tmp_path)
    assert s.schema_version == len(MIGRATIONS)
    assert {"hosts", "jobs", "attempts", "job_nodes", "datasets", "data_placements", "samples", "latest", "events", "lease"} <= set(
        s.db.table_names()
    )
    s.close()
    assert Store.for_state_dir(tmp_path).schema_version == len(MIGRATIONS)


def test_the_store_uses_wal_and_foreign_keys(tmp_path):
    s = Store.for_state_dir(tmp_path)
    assert s.one("PRAGMA journal_mode")["journal_mode"] == "wal"
    assert s.one("PRAGMA foreign_keys")["foreign_keys"] == 1


def test_a_failed_transaction_leaves_neither_the_change_nor_its_event(tmp_path):
    s = Store.for_state_dir(tmp_path)
    with pytest.raises(RuntimeError):
        with s.tx():
            s.execute("INSERT INTO hosts (name, address) VALUES ('a', 'x')")
            s.event("host:a", "added")
            raise RuntimeError("boom")
    assert s.query("SELECT * FROM hosts") == []
    assert s.query("SELECT * FROM events") == []


def test_nested_transactions_join_the_outer_one(tmp_path):
    s = Store.for_state_dir(tmp_path, actor="tester")
    with s.tx():
        s.execute("INSERT INTO hosts (name, address) VALUES ('a', 'x')")
        with s.tx():
            s.event("host:a", "added", "by test")
    assert [(e["actor"], e["object"], e["what"], e["reason"]) for e in s.query("SELECT * FROM events")] == [
        ("tester", "host:a", "added", "by test")
    ]

"""The shared rules (scheduler.rules): each one a table of cases."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from scheduler import rules


@pytest.mark.parametrize(
    "declared, detected, gpus",
    [
        (8, None, 8),  # declared, never probed
        (8, 6, 8),  # hosts.toml wins over the probe (the operator may hide GPUs)
        (0, 8, 0),  # declared zero is a declaration, not a missing value
        (None, 4, 4),  # not declared: the last probe's count
        (None, 0, 0),  # probed, no GPU
        (None, None, None),  # neither: not known yet
    ],
)
def test_a_hosts_gpus_are_declared_else_detected_else_unknown(declared, detected, gpus):
    assert rules.host_gpus(declared, detected) == gpus


@pytest.mark.parametrize(
    "gpus_per_node, asked, procs",
    [
        (8, None, 8),  # one process per GPU
        (4, 2, 4),  # GPUs win over --procs-per-node
        (0, 3, 3),  # a CPU job runs as asked
        (0, None, 1),  # a CPU job asking nothing runs one
        (None, None, 1),
    ],
)
def test_a_node_runs_one_process_per_gpu_else_as_asked_else_one(gpus_per_node, asked, procs):
    assert rules.procs_per_node(gpus_per_node, asked) == procs


@pytest.mark.parametrize(
    "reachability, draining, state",
    [
        ("up", False, "up"),
        ("up", True, "draining"),
        ("unknown", True, "draining"),  # drained before any probe: still nothing goes there
        ("unknown", False, "unknown"),
        (None, 0, "unknown"),  # no row yet
        ("down", False, "down"),
        ("down", True, "down"),  # unreachable beats drained
        ("sideways", 0, "unknown"),  # anything else is not a state we show
    ],
)
def test_a_hosts_state_is_down_before_draining_before_its_reachability(reachability, draining, state):
    assert rules.host_state(reachability, draining) == state


NODE_CASES = [
    # (job state, node of the job's current attempt, node state) -> holds its GPUs
    (("RUNNING", True, "RUNNING"), True),
    (("STARTING", True, "STARTING"), True),
    (("RUNNING", True, "EXITED"), True),  # the attempt keeps its allocation until it ends
    (("RUNNING", True, "LOST"), True),
    (("RUNNING", False, "EXITED"), False),  # an earlier attempt of a live job
    (("RUNNING", False, "LOST"), True),  # ... unless lost: its processes may still run
    (("FAILED", True, "LOST"), True),
    (("FAILED", True, "EXITED"), False),
    (("SUCCEEDED", True, "EXITED"), False),
    (("PENDING", False, "EXITED"), False),  # requeued for a retry
]


@pytest.mark.parametrize("node, holds", NODE_CASES)
def test_a_node_holds_its_gpus_while_its_attempt_is_live_or_it_is_lost(node, holds):
    assert rules.node_holds_gpus(*node) is holds


def test_the_sql_rule_for_gpus_in_use_is_the_python_rule_in_every_case():
    db = sqlite3.connect(":memory:")
    db.executescript("CREATE TABLE jobs (id, state, attempt); CREATE TABLE job_nodes (job_id, attempt, state);")
    job_states = ("PENDING", "STARTING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT")
    node_states = ("PENDING", "STARTING", "RUNNING", "EXITED", "LOST")
    cases = list(itertools.product(job_states, (True, False), node_states))
    for i, (job, current, node) in enumerate(cases):
        db.execute("INSERT INTO jobs VALUES (?, ?, 2)", (i, job))
        db.execute("INSERT INTO job_nodes VALUES (?, ?, ?)", (i, 2 if current else 1, node))

    got = {r[0] for r in db.execute(f"SELECT n.job_id FROM job_nodes n JOIN jobs j ON j.id = n.job_id WHERE {rules.NODE_HOLDS_GPUS_SQL}")}

    assert got == {i for i, case in enumerate(cases) if rules.node_holds_gpus(*case)}

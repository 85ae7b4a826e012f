"""The one owner of job, attempt and node state: every transition is a function here.

Each function is one transaction that checks the state it expects (another process may have moved
the job meanwhile), writes the job, its attempt and its nodes together, and appends the event. No
other module writes the `state` (or `cancel_requested`, `attempt`) columns of jobs, attempts or
job_nodes; tests/test_lifecycle.py scans the sources to keep it so.

The transitions (model.py has the states):

    submit          -> PENDING
    note_waiting    PENDING: why it still waits
    request_cancel  PENDING -> CANCELLED; STARTING/RUNNING: flagged, ended by end_attempt
    start_attempt   PENDING -> STARTING, its nodes recorded STARTING before any remote start
    node_started    node STARTING -> RUNNING, with the pid the host gave
    mark_running    STARTING -> RUNNING once every node runs
    record_facts    what a host said about a node: pid, exit status, log size, metrics
    note_stopping   a teardown that is not verified yet: the reason says what is left
    end_attempt     STARTING/RUNNING -> PENDING (retry, or never really ran; not once a cancel is asked)
                    or a terminal state
    node_swept      LOST node -> EXITED once its host answered and nothing of the job is left

Nothing here talks to hosts: control.py tears down first, then calls end_attempt with the verdict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .model import ACTIVE, AttemptState, Ending, Job, JobState, Node, NodePlan, NodeState, Verdict, sql_set
from .store import Store, dumps

if TYPE_CHECKING:
    from .jobs import JobSpec
    from .launch import NodeStatus

_ACTIVE = sql_set(ACTIVE)


def _job(store: Store, job_id: int) -> Job | None:
    row = store.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return Job.of(row) if row else None


# --- submit and cancel: intents from users ----------------------------------------------------------


def submit(store: Store, spec: JobSpec, *, actor: str, default_name: str) -> int:
    """The PENDING row and its `submitted` event; `spec` is already validated. Returns the id."""
    with store.tx():
        cur = store.execute(
            "INSERT INTO jobs (name, state, reason, command, nodes, gpus_per_node, procs_per_node, data, priority,"
            " time_limit, retries, attempt, env, tags, user, submitted_at)"
            " VALUES (?, ?, 'waiting for resources', ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                spec.name or "", JobState.PENDING, dumps(spec.command), spec.nodes, spec.gpus_per_node, spec.procs_per_node,
                spec.data, spec.priority, spec.time_limit, spec.retries, dumps(spec.env), dumps(spec.tags),
                actor.split("@", 1)[0], time.time(),
            ),
        )  # fmt: skip
        job_id = cur.lastrowid
        if not spec.name:  # the id makes the default name unique
            store.execute("UPDATE jobs SET name = ? WHERE id = ?", (f"{default_name}-{job_id}", job_id))
        shape = f"{spec.nodes} node(s) x {spec.gpus_per_node} GPU(s)"
        if spec.procs_per_node:
            shape += f" x {spec.procs_per_node} process(es)"
        store.event(f"job:{job_id}", "submitted", shape, actor=actor)
    return job_id


def request_cancel(store: Store, job_id: int, *, actor: str | None = None) -> JobState | None:
    """Record the intent; returns the state afterwards (None: no such job).

    A PENDING job has no process anywhere (a retry is requeued only after its processes are gone), so
    it is CANCELLED here. A STARTING/RUNNING one is only flagged: end_attempt records CANCELLED once
    the teardown verified that nothing is left on any host.
    """
    actor = actor or store.actor
    obj = f"job:{job_id}"
    with store.tx():
        job = _job(store, job_id)
        if job is None:
            return None
        if job.state == JobState.PENDING:
            reason = f"cancelled by {actor} before it started"
            store.execute(
                "UPDATE jobs SET state = ?, reason = ?, ended_at = ? WHERE id = ?",
                (JobState.CANCELLED, reason, time.time(), job_id),
            )
            store.event(obj, JobState.CANCELLED, reason, actor=actor)
            return JobState.CANCELLED
        if job.active and not job.cancel_requested:
            store.execute(
                "UPDATE jobs SET cancel_requested = 1, reason = ? WHERE id = ?",
                (f"cancel requested by {actor}; stopping every node", job_id),
            )
            store.event(obj, "cancel requested", "", actor=actor)
        return job.state


def cancel_actor(store: Store, job_id: int) -> str:
    """Who asked for the cancel (the newest 'cancel requested' event), for the final reason."""
    row = store.one(
        "SELECT actor FROM events WHERE object = ? AND what = 'cancel requested' ORDER BY id DESC LIMIT 1",
        (f"job:{job_id}",),
    )
    return row["actor"] if row else "a user"


def note_waiting(store: Store, reasons: Sequence[tuple[str, int]]) -> None:
    """Why PENDING jobs still wait ((reason, job id) pairs), e.g. a host without a rendezvous address;
    a job that left PENDING meanwhile keeps its own reason."""
    with store.tx():
        store.conn.executemany(f"UPDATE jobs SET reason = ? WHERE id = ? AND state = '{JobState.PENDING}'", reasons)


# --- starting ---------------------------------------------------------------------------------------


def start_attempt(store: Store, job_id: int, plans: Sequence[NodePlan], *, reason: str, now: float) -> int | None:
    """PENDING -> STARTING with a new attempt and its nodes (STARTING, no pid): committed before any
    remote start, so a loop that dies mid-start finds the nodes and looks for them on their hosts.
    Returns the attempt number, or None when the job is no longer PENDING or a cancel is asked."""
    with store.tx():
        job = _job(store, job_id)
        if job is None or job.state != JobState.PENDING or job.cancel_requested:
            return None
        attempt = job.attempt + 1
        store.execute(
            "UPDATE jobs SET state = ?, attempt = ?, reason = ?, started_at = COALESCE(started_at, ?), progress_at = ? WHERE id = ?",
            (JobState.STARTING, attempt, reason, now, now, job_id),
        )
        store.execute(
            "INSERT INTO attempts (job_id, attempt, state, started_at) VALUES (?, ?, ?, ?)",
            (job_id, attempt, AttemptState.STARTING, now),
        )
        for p in plans:
            store.execute(
                "INSERT INTO job_nodes (job_id, attempt, node_rank, host, gpus, port, run_dir, data_path, state, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, attempt, p.node_rank, p.host, dumps(list(p.gpus)), p.port, p.run_dir, p.data_path, NodeState.STARTING, now),
            )
        store.event(f"job:{job_id}", JobState.STARTING, reason)
    return attempt


def node_started(store: Store, job_id: int, attempt: int, pids: dict[int, int]) -> None:
    """Nodes (by rank) whose host answered the start with the pid of their detached wrapper."""
    with store.tx():
        for rank, pid in pids.items():
            store.execute(
                "UPDATE job_nodes SET pid = ?, state = ? WHERE job_id = ? AND attempt = ? AND node_rank = ? AND state = ?",
                (pid, NodeState.RUNNING, job_id, attempt, rank, NodeState.STARTING),
            )


def mark_running(store: Store, job_id: int, attempt: int, reason: str) -> bool:
    """STARTING -> RUNNING (job and attempt) once every node runs; False if it moved meanwhile."""
    with store.tx():
        cur = store.execute(
            "UPDATE jobs SET state = ?, reason = ? WHERE id = ? AND attempt = ? AND state = ?",
            (JobState.RUNNING, reason, job_id, attempt, JobState.STARTING),
        )
        if not cur.rowcount:
            return False
        store.execute(
            "UPDATE attempts SET state = ? WHERE job_id = ? AND attempt = ?", (AttemptState.RUNNING, job_id, attempt)
        )
        store.event(f"job:{job_id}", JobState.RUNNING, reason)
    return True


# --- facts from hosts -------------------------------------------------------------------------------


def record_facts(store: Store, node: Node, st: NodeStatus, now: float) -> None:
    """What the node's host said: its pid, whether it exited and how, how far its log and metrics
    got. Call inside the caller's transaction (one per round of answers)."""
    state = NodeState.EXITED if st.exit is not None else NodeState.RUNNING if st.alive else node.state
    log_size = st.log_size if st.log_size is not None else node.log_offset
    with store.tx():
        store.execute(
            "UPDATE job_nodes SET pid = ?, state = ?, exit_code = ?, log_offset = ?, last_seen = ? "
            "WHERE job_id = ? AND attempt = ? AND node_rank = ?",
            (st.pid or node.pid, state, st.exit, log_size, now, node.job_id, node.attempt, node.node_rank),
        )
        if log_size > node.log_offset:
            store.execute("UPDATE jobs SET progress_at = ? WHERE id = ?", (now, node.job_id))
        if st.metrics_last:
            try:
                metrics = dumps(json.loads(st.metrics_last))
            except ValueError:
                return
            store.execute(
                "UPDATE jobs SET metrics = ?, metrics_at = ?, progress_at = ? WHERE id = ? AND metrics IS NOT ?",
                (metrics, now, now, node.job_id, metrics),
            )


# --- ending -----------------------------------------------------------------------------------------


MAX_ABORTED = 10  # starts that never really ran (a host that did not answer, a busy port) before giving up


def next_state(ending: AttemptState, failures: int, retries: int, aborted: int = 0) -> JobState:
    """The retry rule: an attempt that never really ran goes back to the queue uncharged, up to
    MAX_ABORTED times (a job that can never start must not cycle forever); a failed one does while
    its failures (this one included) are within --retries; any other end is final."""
    if ending == AttemptState.ABORTED:
        return JobState.PENDING if aborted <= MAX_ABORTED else JobState.FAILED
    if ending == AttemptState.FAILED and failures <= retries:
        return JobState.PENDING
    return JobState(ending.value)


def note_stopping(store: Store, job: Job, ending: Ending, verdict: Verdict) -> None:
    """The teardown is not verified yet: the job keeps its state, its reason says what is left, and
    the attempt keeps the verdict (control.cancel reads it back); the caller tries again later."""
    with store.tx():
        text = f"{ending.reason}; stopping: {verdict.sentence()}"
        store.execute("UPDATE jobs SET reason = ? WHERE id = ? AND attempt = ?", (text, job.id, job.attempt))
        store.execute(
            "UPDATE attempts SET verdict = ? WHERE job_id = ? AND attempt = ?", (verdict.to_json(), job.id, job.attempt)
        )


def end_attempt(store: Store, job: Job, ending: Ending, verdict: Verdict) -> tuple[JobState, str] | None:
    """Record the end of the job's current attempt, given what its teardown found.

    A CANCELLED end needs every host verified; any other end needs every host that was asked clean
    (the nodes of hosts not asked become LOST, swept when they answer again). Short of that the state is
    kept (note_stopping) and None returned. None too when someone else ended the attempt meanwhile
    (a cancel from the CLI racing a loop that took over). Else returns (new job state, reason).
    """
    if not verdict.asked_clean or (ending.state == AttemptState.CANCELLED and not verdict.verified):
        note_stopping(store, job, ending, verdict)
        return None
    now = time.time()
    said = verdict.sentence()
    with store.tx():
        fresh = _job(store, job.id)
        if fresh is None or fresh.attempt != job.attempt or not fresh.active:
            return None
        silent = {host for host, _ in verdict.unreachable}
        for n in store.query("SELECT node_rank, host FROM job_nodes WHERE job_id = ? AND attempt = ?", (job.id, job.attempt)):
            lost = n["host"] in silent
            store.execute(
                "UPDATE job_nodes SET state = ? WHERE job_id = ? AND attempt = ? AND node_rank = ?",
                (NodeState.LOST if lost else NodeState.EXITED, job.id, job.attempt, n["node_rank"]),
            )
        store.execute(
            "UPDATE attempts SET state = ?, reason = ?, ended_at = ?, verdict = ? WHERE job_id = ? AND attempt = ?",
            (ending.state, ending.reason, now, verdict.to_json(), job.id, job.attempt),
        )
        counts = dict(store.execute("SELECT state, count(*) FROM attempts WHERE job_id = ? GROUP BY state", (job.id,)).fetchall())
        failures, aborted = counts.get(AttemptState.FAILED.value, 0), counts.get(AttemptState.ABORTED.value, 0)
        state = next_state(ending.state, failures, fresh.retries, aborted)
        if state == JobState.FAILED and ending.state == AttemptState.ABORTED:
            text = f"FAILED: gave up after {aborted} starts that never ran (the last: {ending.reason}); {said}"
            store.execute("UPDATE jobs SET state = ?, reason = ?, ended_at = ? WHERE id = ?", (state, text, now, job.id))
        elif state == JobState.PENDING and fresh.cancel_requested:
            # A cancel was asked while the attempt ran (it ended first, e.g. NODE_LOST): no retry. The loop
            # places no job that has a cancel asked, and nobody may be waiting to end it in the queue.
            state = JobState.CANCELLED
            text = f"cancelled by {cancel_actor(store, job.id)}; attempt {job.attempt} had ended first: {ending.reason}; {said}"
            store.execute("UPDATE jobs SET state = ?, reason = ?, ended_at = ? WHERE id = ?", (state, text, now, job.id))
        elif state == JobState.PENDING:
            used = f" ({failures} of {fresh.retries} retries used)" if ending.state == AttemptState.FAILED else ""
            text = f"attempt {job.attempt} ended: {ending.reason}; {said}; retrying as attempt {job.attempt + 1}{used}"
            store.execute("UPDATE jobs SET state = ?, reason = ? WHERE id = ?", (state, text, job.id))
        else:
            text = f"{ending.reason}; {said}"
            store.execute("UPDATE jobs SET state = ?, reason = ?, ended_at = ? WHERE id = ?", (state, text, now, job.id))
        store.event(f"job:{job.id}", state, text, actor=ending.actor)
    return state, text


def node_swept(store: Store, job_id: int, host: str, text: str) -> None:
    """The job's LOST nodes on `host` are over: the host answered and nothing of the job is left."""
    with store.tx():
        store.execute(
            "UPDATE job_nodes SET state = ? WHERE job_id = ? AND host = ? AND state = ?",
            (NodeState.EXITED, job_id, host, NodeState.LOST),
        )
        store.event(f"job:{job_id}", "swept", text)

"""The rules every front end shares: pure functions over plain values, no store and no host.

Each rule lives here once; the scheduler, `headnode hosts` (table and --json), `headnode top`, the
Prometheus export and the console all call it, so two places can never show two answers.
"""

from __future__ import annotations

from .model import ACTIVE, NodeState, sql_set


def host_gpus(declared: int | None, detected: int | None) -> int | None:
    """A host's GPUs: hosts.toml when it says (the operator may hide some), else what the last probe
    found, else None: not known yet, and the scheduler places no GPU job there until a probe says."""
    return declared if declared is not None else detected


def procs_per_node(gpus_per_node: int | None, procs_per_node: int | None) -> int:
    """The processes torchrun starts on a node: one per GPU (a rank owns its GPU), else as asked for a
    CPU job (--procs-per-node), else one."""
    return gpus_per_node or procs_per_node or 1


def host_state(reachability: str | None, draining: bool | int | None) -> str:
    """What `headnode hosts` shows: up | down | draining | unknown. Down beats draining (an unreachable
    host needs someone either way; the drain is the operator's own doing), draining beats up and
    unknown (no new job goes there, which is what the column is read for)."""
    if reachability == "down":
        return "down"
    if draining:
        return "draining"
    return reachability if reachability in ("up", "unknown") else "unknown"


def node_holds_gpus(job_state: str, current_attempt: bool, node_state: str) -> bool:
    """Whether a job node's GPUs count as in use. Every node of a live job's current attempt holds them,
    an EXITED one too (the attempt keeps its allocation until it ends as a whole); so does a LOST node
    of any job or attempt, whose processes may still run on a host that stopped answering, until the
    loop's sweep verifies them gone. This is what the scheduler places around (loop._running), so the
    GPUs shown as in use are exactly those it will not give to another job."""
    return (job_state in ACTIVE and current_attempt) or node_state == NodeState.LOST


# node_holds_gpus as SQL over `job_nodes n JOIN jobs j ON j.id = n.job_id`, for the queries that must
# not read every node ever run (tests/test_rules.py checks the two agree on every combination).
NODE_HOLDS_GPUS_SQL = f"((j.state IN {sql_set(ACTIVE)} AND n.attempt = j.attempt) OR n.state = '{NodeState.LOST}')"

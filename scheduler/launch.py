"""Launch: one node of a job attempt started detached on its host, and the probe that watches it.

On each host a job keeps everything under its run dir, `{workdir}/runs/{store}/{job}` (the same for
every attempt, so a retry resumes from the newest checkpoint; the store's id keeps job 3 of one store
apart from job 3 of another, or of a store started anew, on the same host):

    attempt-{a}/node-{k}.log    torchrun's stdout+stderr. Worker lines start with `[rank{R}]:` where
                                R is the worker's *global* rank (LOG_PREFIX_RE); lines without that
                                prefix come from torchrun itself on that node.
    attempt-{a}/node-{k}.exit   torchrun's exit status as text ("0\\n"), written atomically (temp +
                                rename) by the wrapper when torchrun ends; 128+N if killed by signal N.
    attempt-{a}/torchrun/       torchrun's own per-rank copies of the same output (--tee 3 --log-dir).
    metrics.jsonl               written by global rank 0 (the trainer); the loop reads its last line.

Every process of a node carries the marker variables HEADNODE_STORE, HEADNODE_JOB_ID, HEADNODE_ATTEMPT,
HEADNODE_HOST and HEADNODE_NODE_RANK in its environment (exported before the fork, so the wrapper has them too),
and the wrapper leads the node's process group. torchrun puts each worker in a session of its own, so the
marker, not the process group, is what finds every process later (teardown.py).

The job runs with its run dir as the working directory, like a Slurm job in its output directory.
What runs on the host lives in scheduler/remote/: start.sh (checking the port with port_free.py) starts
wrap.sh, which runs torchrun; probe_nodes.py and watch.py report what became of the nodes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import rendezvous, rules
from .execute import Executor, Result, python_argv
from .inventory import Host
from .remote import source

LOG_PREFIX_TEMPLATE = "[rank${rank}]:"  # torchrun expands ${rank} to the global rank
LOG_PREFIX_RE = re.compile(r"^\[rank(\d+)\]:")
MARKER = "HEADNODE_JOB_ID"
STORE_MARKER = "HEADNODE_STORE"  # the store's id: job ids repeat across stores, this does not

PORT_BUSY = "port busy"  # what remote/start.sh prints when node 0's rendezvous port is taken


@dataclass(frozen=True)
class NodeSpec:
    """Everything needed to start node `node_rank` of one job attempt on `host`."""

    job_id: int
    attempt: int
    node_rank: int
    nnodes: int
    host: Host
    gpus: tuple[int, ...]
    port: int
    endpoint: str  # the rendezvous host's address
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    data_path: str | None = None
    procs_per_node: int | None = None  # a zero-GPU job's processes per node (None: one; a GPU job runs one per GPU)
    store_id: str = ""  # the store's id (Store.id): part of the run dir and the marker

    @property
    def run_dir(self) -> str:
        return run_dir(self.host, self.job_id, self.store_id)

    @property
    def nproc(self) -> int:
        """One process per GPU; a zero-GPU job (CPU hosts, tests, `headnode demo`) runs procs_per_node."""
        return rules.procs_per_node(len(self.gpus), self.procs_per_node)


def run_dir(host: Host, job_id: int, store_id: str) -> str:
    """Where job `job_id` of store `store_id` keeps its files on `host`. The loop records it in
    job_nodes.run_dir at launch; whatever later looks for the job's files or processes uses that."""
    if not store_id:
        raise ValueError("a run dir needs the store's id")
    return host.path("runs", store_id, str(job_id))


def address(host: Host) -> str:
    """The address this host's ranks meet the others on (scheduler/rendezvous.py): its rdzv_address
    (from hosts.toml, or filled in by the loop with the one it resolved), else the loopback address for
    `localhost`, else its SSH address if that is an IP address. Never an SSH alias: other hosts
    cannot resolve one, and torchrun would wait for them forever."""
    if host.rdzv_address:
        return host.rdzv_address
    if host.is_local:
        return rendezvous.LOOPBACK
    if rendezvous.is_ip(host.address):
        return host.address
    raise ValueError(f"{host.name}: no rendezvous address known (its SSH address {host.address!r} may be an alias)")


def torchrun_argv(spec: NodeSpec) -> list[str]:
    """torchrun from the host's own interpreter, told explicitly whether it hosts the rendezvous
    (its guess from the hostname fails on hosts with several addresses: FIELD-NOTES)."""
    return [
        spec.host.python, "-m", "torch.distributed.run",
        "--nnodes", str(spec.nnodes),
        "--nproc-per-node", str(spec.nproc),
        "--node-rank", str(spec.node_rank),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", rendezvous.endpoint(spec.endpoint, spec.port),
        "--rdzv-id", f"{spec.job_id}-{spec.attempt}",
        "--rdzv-conf", f"is_host={int(spec.node_rank == 0)}",
        "--local-addr", address(spec.host),
        "--max-restarts", "0",  # a failed attempt is the scheduler's to retry, across the whole gang
        "--tee", "3",
        "--log-dir", f"attempt-{spec.attempt}/torchrun",
        *_target(spec.command),
    ]  # fmt: skip


def _target(command: Sequence[str]) -> list[str]:
    """`python -m mod ...` / `python script ...` run under the host's interpreter; anything else
    is executed as given (torchrun --no-python)."""
    exe, *rest = command
    if re.fullmatch(r"python[0-9.]*", exe):
        if len(rest) >= 2 and rest[0] == "-m":
            return ["-m", *rest[1:]]
        if rest and not rest[0].startswith("-"):
            return rest
    return ["--no-python", *command]


def node_env(spec: NodeSpec) -> dict[str, str]:
    """The node's environment: the job's --env, then ours (the markers must not be overridable).
    HEADNODE_RUN_DIR / HEADNODE_DATA are set by remote/start.sh once the paths are absolute."""
    env = {"PYTHONUNBUFFERED": "1", **spec.env}
    # Zero-GPU jobs see no GPU at all, so a CPU job placed on a GPU host cannot take another job's GPU.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = LOG_PREFIX_TEMPLATE
    if spec.host.network_interface:
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = spec.host.network_interface
    env[MARKER] = str(spec.job_id)
    env[STORE_MARKER] = spec.store_id
    env["HEADNODE_ATTEMPT"] = str(spec.attempt)
    env["HEADNODE_HOST"] = spec.host.name
    env["HEADNODE_NODE_RANK"] = str(spec.node_rank)
    return env


def start_argv(spec: NodeSpec) -> list[str]:
    """remote/start.sh, starting remote/wrap.sh, starting torchrun."""
    env = [f"{k}={v}" for k, v in node_env(spec).items()]
    exit_file = f"attempt-{spec.attempt}/node-{spec.node_rank}.exit"
    check = [spec.host.python, str(spec.port), source("port_free.py")] if spec.node_rank == 0 else ["", "", ""]  # only node 0 binds it
    return [
        "sh", "-c", source("start.sh"), "headnode-start", spec.run_dir, str(spec.attempt), str(spec.node_rank), spec.data_path or "",
        *check, str(len(env)), *env, "sh", "-c", source("wrap.sh"), "headnode-wrap", exit_file, *torchrun_argv(spec),
    ]  # fmt: skip


@dataclass(frozen=True)
class Started:
    node_rank: int
    host: str
    pid: int | None
    error: str | None = None  # why it did not start
    unreachable: bool = False  # the host did not answer (as opposed to refusing the command)
    port_busy: bool = False  # node 0 found its rendezvous port taken, and started nothing


def start(executor: Executor, specs: Sequence[NodeSpec], *, timeout: float = 20.0) -> list[Started]:
    """Start node 0 (the rendezvous host, which first checks its port), then every other node at once:
    one round trip per host; returns as soon as all are detached. When node 0 did not start, the
    others are not tried (nothing would host their rendezvous) and only node 0's Started comes back."""
    specs = sorted(specs, key=lambda s: s.node_rank)
    by_host = {s.host.name: s for s in specs}
    if len(by_host) != len(specs):
        raise ValueError("a job places at most one node per host")
    first = _started(specs[0], executor.run(specs[0].host, start_argv(specs[0]), timeout=timeout))
    if first.pid is None or len(specs) == 1:
        return [first]
    rest = executor.run_many([s.host for s in specs[1:]], lambda h: start_argv(by_host[h.name]), timeout=timeout)
    return [first, *(_started(s, rest[s.host.name]) for s in specs[1:])]


def _started(spec: NodeSpec, r: Result) -> Started:
    out = r.stdout.strip()
    if r.ok and out.isdigit():
        return Started(spec.node_rank, spec.host.name, int(out), None)
    if r.ok and out == PORT_BUSY:
        return Started(spec.node_rank, spec.host.name, None, f"port {spec.port} busy on {spec.host.name}", port_busy=True)
    return Started(spec.node_rank, spec.host.name, None, r.reason or f"unexpected answer {out[:80]!r}", r.error is not None)


# --- watching: one round trip per host (remote/probe_nodes.py) ---------------------------------------


@dataclass(frozen=True)
class NodeStatus:
    pid: int | None
    alive: bool
    exit: int | None
    left: int | None  # once exited: the job's processes still on the host (any attempt)
    log_size: int | None
    metrics_size: int | None
    metrics_last: str | None  # the newest step line (event records skipped)


def probe_many(
    executor: Executor, nodes: Mapping[Host, Sequence[Mapping]], *, timeout: float = 5.0
) -> dict[str, list[NodeStatus] | str]:
    """What became of each host's nodes (dicts with job, attempt, node, pid and run_dir, as recorded in
    job_nodes): one round trip per host, all hosts at once. A host that did not answer maps to the
    sentence saying why."""
    spec = {h.name: json.dumps({"host": h.name, "nodes": [dict(n) for n in ns]}) for h, ns in nodes.items()}
    results = executor.python_many(list(nodes), source("probe_nodes.py"), lambda h: [spec[h.name]], timeout=timeout)
    return {name: _statuses(r) for name, r in results.items()}


def _statuses(r: Result) -> list[NodeStatus] | str:
    if not r.ok:
        return r.reason or "no answer"
    try:
        return [NodeStatus(**d) for d in json.loads(r.stdout)]
    except (ValueError, TypeError) as e:
        return f"unreadable probe answer ({e})"


def watch(executor: Executor, host: Host, nodes: Sequence[Mapping], *, timeout: float):
    """A stream (remote/watch.py) whose first line says that one of `nodes` (dicts with job, attempt,
    node, pid, run_dir) ended, within ~20 ms; it ends without a line after a minute, or when closed.
    Raises execute.HostUnreachable if it cannot start; reading raises it after `timeout` of silence."""
    spec = json.dumps([dict(n) for n in nodes])
    return executor.stream(host, python_argv(host, source("watch.py"), [spec]), read_timeout=timeout)

"""Launch: one node of a job attempt started detached on its host, and the probe that watches it.

On each host a job keeps everything under its run dir, `{workdir}/runs/{job}` (the same for every
attempt, so a retry resumes from the newest checkpoint):

    attempt-{a}/node-{k}.log    torchrun's stdout+stderr. Worker lines start with `[rank{R}]:` where
                                R is the worker's *global* rank (LOG_PREFIX_RE); lines without that
                                prefix come from torchrun itself on that node.
    attempt-{a}/node-{k}.exit   torchrun's exit status as text ("0\\n"), written atomically (temp +
                                rename) by the wrapper when torchrun ends; 128+N if killed by signal N.
    attempt-{a}/torchrun/       torchrun's own per-rank copies of the same output (--tee 3 --log-dir).
    metrics.jsonl               written by global rank 0 (the trainer); the loop reads its last line.

Every process of a node carries the marker variables HEADNODE_JOB_ID, HEADNODE_ATTEMPT, HEADNODE_HOST
and HEADNODE_NODE_RANK in its environment (exported before the fork, so the wrapper has them too),
and the wrapper leads the node's process group. torchrun puts each worker in a session of its own, so the
marker, not the process group, is what finds every process later (teardown.py).

The job runs with its run dir as the working directory, like a Slurm job in its output directory.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import rules
from .execute import Executor, Result, python_argv
from .inventory import Host

LOG_PREFIX_TEMPLATE = "[rank${rank}]:"  # torchrun expands ${rank} to the global rank
LOG_PREFIX_RE = re.compile(r"^\[rank(\d+)\]:")
MARKER = "HEADNODE_JOB_ID"

# The wrapper: runs torchrun in the foreground and records how it ended. Constant text; every user
# part arrives as a positional argument ("$@"), so nothing the user typed is parsed by a shell.
WRAP = 'exitf=$1; shift; "$@"; code=$?; printf "%s\\n" "$code" >"$exitf.tmp" && mv -f -- "$exitf.tmp" "$exitf"'

# Exits 3 if the rendezvous port is taken (by a process that is not one of our jobs: the policy never
# gives two of ours one port on a host). It binds as torchrun's c10d store will: every address, IPv6
# dual-stack where the host has it, else IPv4, with SO_REUSEADDR (so a port in TIME_WAIT is free).
# Any other failure is left for torchrun to report. Run with -I: a socket.py in the login directory
# must not stand in for the module.
PORT_FREE = """
import errno, socket, sys
port = int(sys.argv[1])
for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
    try:
        socket.create_server((host, port), family=family, dualstack_ipv6=family == socket.AF_INET6).close()
        break
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            sys.exit(3)
    except ValueError:  # no dual-stack here
        pass
"""
PORT_BUSY = "port busy"

# The starter: on the rendezvous node, first checks that the port is free (or prints PORT_BUSY and
# starts nothing); makes the attempt dir, resolves paths against the login directory (the run dir
# physically: the marker search compares it with realpath), exports the node's environment (so every
# process it forks carries the marker from its first instant: a teardown racing the start cannot miss
# one), starts the wrapper in its own session with all three fds redirected (or the SSH channel would
# stay open) and prints its pid. `export "$1"` takes the word literally: values are never re-parsed.
# A background job of a non-interactive sh is not a group leader, so setsid does not fork: $! is the
# wrapper itself, leader of the node's session and process group.
START = """
run_dir=$1 attempt=$2 node=$3 data=$4 py=$5 port=$6 n=$7; shift 7
if [ -n "$port" ]; then "$py" -I -c @PORT_FREE@ "$port"; [ $? -ne 3 ] || { echo "@PORT_BUSY@"; exit 0; }; fi
case $data in ''|/*) ;; *) data=$PWD/$data ;; esac
mkdir -p -- "$run_dir/attempt-$attempt" && cd -- "$run_dir" || exit 1
while [ "$n" -gt 0 ]; do export "$1"; shift; n=$((n - 1)); done
export HEADNODE_RUN_DIR="$(pwd -P)"
if [ -n "$data" ]; then export HEADNODE_DATA="$data"; fi
setsid "$@" </dev/null >"attempt-$attempt/node-$node.log" 2>&1 &
echo $!
""".replace("@PORT_FREE@", shlex.quote(PORT_FREE)).replace("@PORT_BUSY@", PORT_BUSY)


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

    @property
    def run_dir(self) -> str:
        return run_dir(self.host, self.job_id)

    @property
    def nproc(self) -> int:
        """One process per GPU; a zero-GPU job (CPU hosts, tests, `headnode demo`) runs procs_per_node."""
        return rules.procs_per_node(len(self.gpus), self.procs_per_node)


def run_dir(host: Host, job_id: int) -> str:
    return host.path("runs", str(job_id))


def address(host: Host) -> str:
    """The address other nodes reach this host at (the loopback address for `localhost`)."""
    return "127.0.0.1" if host.is_local else host.address


def torchrun_argv(spec: NodeSpec) -> list[str]:
    """torchrun from the host's own interpreter, told explicitly whether it hosts the rendezvous
    (its guess from the hostname fails on hosts with several addresses: FIELD-NOTES)."""
    return [
        spec.host.python, "-m", "torch.distributed.run",
        "--nnodes", str(spec.nnodes),
        "--nproc-per-node", str(spec.nproc),
        "--node-rank", str(spec.node_rank),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"{spec.endpoint}:{spec.port}",
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
    HEADNODE_RUN_DIR / HEADNODE_DATA are set by START once the paths are absolute."""
    env = {"PYTHONUNBUFFERED": "1", **spec.env}
    # Zero-GPU jobs see no GPU at all, so a CPU job placed on a GPU host cannot take another job's GPU.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpus))
    env["TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"] = LOG_PREFIX_TEMPLATE
    if spec.host.network_interface:
        env["GLOO_SOCKET_IFNAME"] = env["NCCL_SOCKET_IFNAME"] = spec.host.network_interface
    env[MARKER] = str(spec.job_id)
    env["HEADNODE_ATTEMPT"] = str(spec.attempt)
    env["HEADNODE_HOST"] = spec.host.name
    env["HEADNODE_NODE_RANK"] = str(spec.node_rank)
    return env


def start_argv(spec: NodeSpec) -> list[str]:
    env = [f"{k}={v}" for k, v in node_env(spec).items()]
    exit_file = f"attempt-{spec.attempt}/node-{spec.node_rank}.exit"
    check = [spec.host.python, str(spec.port)] if spec.node_rank == 0 else ["", ""]  # only node 0 binds it
    return [
        "sh", "-c", START, "headnode-start", spec.run_dir, str(spec.attempt), str(spec.node_rank), spec.data_path or "",
        *check, str(len(env)), *env, "sh", "-c", WRAP, "headnode-wrap", exit_file, *torchrun_argv(spec),
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


# --- watching: one round trip per host ------------------------------------------------------------

# Input: {"host": NAME, "nodes": [{"job", "attempt", "node", "run_dir", "pid"}]}; output: one JSON list,
# per node {pid, alive, exit, left, log_size, metrics_size, metrics_last}. For a node whose pid was
# never recorded (the loop died while starting it), the pid is found by its marker; for a node that
# exited, `left` counts the job's processes still on the host (0 spares the teardown a round trip).
# Alive is checked before the exit file is read: a wrapper that is gone has already renamed its exit
# file into place.
PROBE = r"""
import json, os, sys
spec = json.loads(sys.argv[1])

def environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return set()

_marked = None

def marked(n, *extra):
    # [(pid, pgid)] of live processes of node n's job on this host (the marker of teardown.KILL);
    # /proc is read at most once per probe, and only when a node needs it.
    global _marked
    if _marked is None:
        _marked = []
        for p in os.listdir("/proc"):
            env = environ(p) if p.isdigit() else set()
            if not any(e.startswith(b"HEADNODE_JOB_ID=") for e in env):
                continue
            try:
                with open(f"/proc/{p}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z":
                _marked.append((int(p), int(fields[2]), env))
    want = {f"HEADNODE_JOB_ID={n['job']}".encode(), f"HEADNODE_HOST={spec['host']}".encode(),
            b"HEADNODE_RUN_DIR=" + os.path.realpath(n["run_dir"]).encode(), *extra}
    return [(pid, pgid) for pid, pgid, env in _marked if want <= env]

def find_pgid(n):
    extra = (f"HEADNODE_ATTEMPT={n['attempt']}".encode(), f"HEADNODE_NODE_RANK={n['node']}".encode())
    return next((pid for pid, pgid in marked(n, *extra) if pid == pgid), None)

def alive(pgid):
    try:
        os.killpg(pgid, 0)  # EPERM: the id now belongs to another user's group, so ours is gone
        return True
    except OSError:
        return False

def read(path, limit=None):
    try:
        with open(path, "rb") as f:
            if limit:
                f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            return f.read()
    except OSError:
        return None

def size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return None

out = []
for n in spec["nodes"]:
    base = f"{n['run_dir']}/attempt-{n['attempt']}/node-{n['node']}"
    pid = n["pid"] or find_pgid(n)
    live = pid is not None and alive(pid)
    code = read(base + ".exit")
    metrics = f"{n['run_dir']}/metrics.jsonl"
    last = None
    for line in reversed((read(metrics, 65536) or b"").split(b"\n")[:-1]):  # complete lines only
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and "step" in d and "event" not in d:
            last = line.decode()
            break
    exit = int(code) if code and code.strip().lstrip(b"-").isdigit() else None
    out.append({
        "pid": pid, "alive": live, "exit": exit,
        "left": len(marked(n)) if exit is not None else None,
        "log_size": size(base + ".log"), "metrics_size": size(metrics),
        "metrics_last": last,
    })
print(json.dumps(out))
"""


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
    """What became of each host's nodes (dicts with job, attempt, node, pid): one round trip per
    host, all hosts at once. A host that did not answer maps to the sentence saying why."""
    spec = {
        h.name: json.dumps({"host": h.name, "nodes": [{**n, "run_dir": run_dir(h, n["job"])} for n in ns]})
        for h, ns in nodes.items()
    }
    results = executor.python_many(list(nodes), PROBE, lambda h: [spec[h.name]], timeout=timeout)
    return {name: _statuses(r) for name, r in results.items()}


def _statuses(r: Result) -> list[NodeStatus] | str:
    if not r.ok:
        return r.reason or "no answer"
    try:
        return [NodeStatus(**d) for d in json.loads(r.stdout)]
    except (ValueError, TypeError) as e:
        return f"unreadable probe answer ({e})"


# Sits on a host while the loop idles, and prints one line as soon as one of the given running nodes
# ends (its process group is gone or its exit file appears), so the loop notices a finished job in
# ~20 ms instead of at its next cycle. It ends with that line, when its stdin closes (the loop
# closes the stream to wake it or stop it), or after a minute at most.
WATCH = r"""
import json, os, select, sys, time
nodes = json.loads(sys.argv[1])

def ended(n):
    try:
        os.killpg(n["pid"], 0)
    except OSError:
        return True
    return os.path.exists(f"{n['run_dir']}/attempt-{n['attempt']}/node-{n['node']}.exit")

deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done = [n for n in nodes if ended(n)]
    if done:
        print(json.dumps(done), flush=True)
        break
    if select.select([sys.stdin], [], [], 0.02)[0] and not os.read(sys.stdin.fileno(), 1):
        break
"""


def watch(executor: Executor, host: Host, nodes: Sequence[Mapping], *, timeout: float):
    """A stream whose first line says that one of `nodes` (dicts with job, attempt, node, pid) ended.
    Raises execute.HostUnreachable if it cannot start; reading raises it after `timeout` of silence."""
    spec = json.dumps([{**n, "run_dir": run_dir(host, n["job"])} for n in nodes])
    return executor.stream(host, python_argv(host, WATCH, [spec]), read_timeout=timeout)

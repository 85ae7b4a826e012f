"""What became of a host's nodes of running jobs: one round trip per host, on every reconcile.

    python probe_nodes.py SPEC

SPEC is JSON: {"host": NAME, "nodes": [{"job", "attempt", "node", "run_dir", "pid"}, ...]}. Prints one
JSON list, per node in order: {"pid", "alive", "exit", "left", "log_size", "metrics_size",
"metrics_last"}. For a node whose pid was never recorded (the loop died while starting it), the pid is
found by its marker; for a node that exited, `left` counts the job's processes still on the host (0
spares the teardown a round trip). Alive is checked before the exit file is read: a wrapper that is
gone has already renamed its exit file into place. `metrics_last` is the newest step line of the
run's metrics.jsonl (as JSON text), by trainer.metrics's own rule: `source` bundles that module.
"""

import json
import os
import sys

from trainer.metrics import FILE, last_metrics


class Marked:
    """The live processes carrying a job marker on this host (the marker kill.py looks for); /proc is
    read at most once, and only when a node needs it."""

    def __init__(self, host: str):
        self.host = host
        self._procs = None  # [(pid, pgid, environ)]

    def of(self, n: dict, *extra: bytes) -> list:
        """[(pid, pgid)] of node n's job on this host, narrowed by `extra` environment entries."""
        if self._procs is None:
            self._procs = list(_scan())
        want = {
            f"HEADNODE_JOB_ID={n['job']}".encode(),
            f"HEADNODE_HOST={self.host}".encode(),
            b"HEADNODE_RUN_DIR=" + os.path.realpath(n["run_dir"]).encode(),
            *extra,
        }
        return [(pid, pgid) for pid, pgid, env in self._procs if want <= env]

    def leader(self, n: dict):
        """The pid of the node's process group leader (the wrapper), None when there is none."""
        extra = (f"HEADNODE_ATTEMPT={n['attempt']}".encode(), f"HEADNODE_NODE_RANK={n['node']}".encode())
        return next((pid for pid, pgid in self.of(n, *extra) if pid == pgid), None)


def _scan():
    for p in os.listdir("/proc"):
        env = _environ(p) if p.isdigit() else set()
        if not any(e.startswith(b"HEADNODE_JOB_ID=") for e in env):
            continue
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            yield int(p), int(fields[2]), env


def _environ(pid) -> set:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return set()


def alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # EPERM: the id now belongs to another user's group, so ours is gone
        return True
    except OSError:
        return False


def read(path: str):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def size(path: str):
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def newest_step(path: str):
    try:
        step = last_metrics(path)
    except OSError:  # not a file (a directory), or not ours to read
        return None
    return None if step is None else json.dumps(step)


def probe(spec: dict) -> list:
    marked = Marked(spec["host"])
    out = []
    for n in spec["nodes"]:
        base = f"{n['run_dir']}/attempt-{n['attempt']}/node-{n['node']}"
        pid = n["pid"] or marked.leader(n)
        live = pid is not None and alive(pid)
        code = read(base + ".exit")
        metrics = f"{n['run_dir']}/{FILE}"
        exit = int(code) if code and code.strip().lstrip(b"-").isdigit() else None
        out.append({
            "pid": pid, "alive": live, "exit": exit,
            "left": len(marked.of(n)) if exit is not None else None,
            "log_size": size(base + ".log"), "metrics_size": size(metrics),
            "metrics_last": newest_step(metrics),
        })  # fmt: skip
    return out


def main(argv=None) -> None:
    (spec,) = sys.argv[1:] if argv is None else argv
    print(json.dumps(probe(json.loads(spec))))


if __name__ == "__main__":
    main()

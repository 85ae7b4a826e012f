"""Chaos: a stream of short jobs while the scheduler loop (a real `scheduler run` process) is SIGKILLed at
random moments (two of them while a start is in flight) and restarted, one host's link is cut and healed,
another host's sshd is stopped (SIGSTOP) and resumed, and three jobs are cancelled through the CLI (one by a
`cancel --timeout 0` that does not wait: the loop must carry it out alone). Then a last loop runs until the
queue is empty and every node is swept, and the store and the hosts must agree on what happened:

- no job is lost: every submitted id is in the store;
- every job is in a true final state: CANCELLED exactly for the cancelled ones; else SUCCEEDED, or FAILED
  with its retries used up. Every attempt that did not succeed (or end by the cancel) is explained by a
  fault we injected: FAILED as `NODE_LOST: HOST ...` naming only hosts we cut or froze, before it ended,
  or as a node exiting non-zero while the link of one of its hosts was cut; ABORTED as a node that never
  started while we killed the loop, or could not be started on a faulted host;
- never launched twice: every rank of every job appends one line "JOB ATTEMPT NODE LOCAL_RANK" to a file
  in its run dir; each line is an attempt and node the store recorded on that host, none appears twice,
  a SUCCEEDED attempt has every line and exit status 0 from every node, and a node the store says never
  started has no lines and its torchrun never ran; the store holds one STARTING event per attempt, and attempts are
  numbered 1..N as the job says;
- nothing is left: no process with a job marker on any host (read from /proc, not through headnode).

Everything random comes from one seed, printed first; `HEADNODE_CHAOS_SEED=N` replays the same plan (the
machine's timing still varies). The figures are printed at the end, so a CI log shows them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scheduler import inventory
from scheduler.cli import main
from scheduler.store import Store
from tests.cluster import job_processes
from tests.support import scheduler, wait_state

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NODE_LOST_TIMEOUT = 6.0
SETTINGS = (
    "\n[scheduler]\ncycle_interval = 0.5\ngrace_period = 3\nlease_ttl = 10\n"
    f"node_lost_timeout = {NODE_LOST_TIMEOUT:g}\n"
)
# What every rank runs (torchrun --no-python): one line with its job, attempt, node and local rank, into
# its run dir (the working directory), then a sleep of $1 seconds.
RANK = 'echo "$HEADNODE_JOB_ID $HEADNODE_ATTEMPT $HEADNODE_NODE_RANK $LOCAL_RANK" >> ran; sleep "$1"'
GPUS_PER_HOST = 4
CANCEL_SLEEP = 30  # a job to be cancelled runs long enough to be still running when the cancel comes
FINAL_DEADLINE = 240.0  # seconds after the last injected event for the queue to empty (generous: 2 cores)


# --- the plan: every random choice, made up front from the seed ----------------------------------


@dataclass
class JobPlan:
    at: float
    nodes: int
    procs: int  # processes per node: as many (test-declared) GPUs, or CPU processes with --gpus-per-node 0
    gpus: bool  # on GPUs (placed by free GPUs, so they spread and queue) or CPU only (they share hosts freely)
    sleep: int
    retries: int
    cancel_after: float | None = None  # seconds after its submit
    cancel_running: bool = False  # ... or, from then on, as soon as it starts
    cancel_waits: bool = True  # the cancel command waits until the job is stopped (else --timeout 0)

    def argv(self) -> list[str]:
        shape = ["--gpus-per-node", str(self.procs)] if self.gpus else ["--gpus-per-node", "0", "--procs-per-node", str(self.procs)]
        return ["--nodes", str(self.nodes), *shape, "--retries", str(self.retries), "--", "sh", "-c", RANK, "chaos", str(self.sleep)]


@dataclass
class Plan:
    jobs: list[JobPlan]
    kills: list[tuple[float, float, bool]]  # (at, restart after, wait for a start in flight first)
    cut: tuple[str, float, float]  # (host, at, seconds)
    freeze: tuple[str, float, float]

    @classmethod
    def make(cls, rng: random.Random, hosts: list[str]) -> Plan:
        jobs, t = [], 0.5
        for _ in range(rng.randint(20, 25)):
            jobs.append(JobPlan(t, rng.choice([1, 2]), rng.choice([1, 2]), rng.random() < 0.75, rng.randint(1, 3), rng.choice([0, 1])))
            t += rng.uniform(0.8, 2.0)
        # Three cancels: one at a random moment (the job may still wait), one as soon as the job starts, one at a
        # random moment that nobody waits for. Retries 1: a node lost first must not requeue the job.
        for k, i in enumerate(rng.sample(range(3, len(jobs) - 3), 3)):
            j = jobs[i]
            jobs[i] = JobPlan(j.at, j.nodes, j.procs, j.gpus, CANCEL_SLEEP, 1, rng.uniform(0.0, 4.0), k == 1, k != 2)
        end = jobs[-1].at
        cut_host, frozen = rng.sample(hosts, 2)
        cut_at = rng.uniform(6.0, end / 2)
        cut = (cut_host, cut_at, NODE_LOST_TIMEOUT + rng.uniform(6.0, 10.0))
        freeze_at = cut_at + cut[2] + rng.uniform(2.0, 5.0)
        freeze = (frozen, freeze_at, NODE_LOST_TIMEOUT + rng.uniform(6.0, 10.0))
        # One kill inside the freeze: a fresh loop must connect to the stopped sshd (open sessions still work);
        # two as soon as a start is in flight (its nodes committed, the hosts not answered yet); the rest anywhere.
        kills = [(freeze_at + rng.uniform(0.5, 2.0), rng.uniform(0.2, 1.0), False)]
        wanted = rng.randint(5, 7)
        for _ in range(1000):  # bounded: spaced kills always fit in 20+ s, but never loop forever
            if len(kills) == wanted:
                break
            at = rng.uniform(2.0, end + 4.0)
            if all(abs(at - k[0]) > 3.0 for k in kills):
                kills.append((at, rng.uniform(0.0, 2.5), len(kills) in (1, 2)))
        return cls(jobs, sorted(kills), cut, freeze)


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Chaos:
    config: Path
    logs: Path
    store: Store
    cluster: object
    t0: float = field(default_factory=time.monotonic)
    loop: subprocess.Popen | None = None
    loops: list[subprocess.Popen] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids we SIGKILLed
    kill_times: list[float] = field(default_factory=list)  # wall clock, as the store's timestamps
    # host -> ("cut" or "freeze", since, until): wall clock, as the store's timestamps; until None while on
    faults: dict[str, tuple[str, float, float | None]] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    cancels: dict[int, subprocess.Popen] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ["jobs", "kills", "kills at a start", "restarts", "leases lost", "cuts", "freezes", "cancels"], 0))

    def now(self) -> float:
        return time.monotonic() - self.t0

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    def start_loop(self) -> None:
        assert self.loop is None
        with open(self.logs / f"loop-{len(self.loops)}.log", "w") as log:
            self.loop = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "scheduler", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True,
            )  # fmt: skip
        self.loops.append(self.loop)

    def check_loop(self) -> None:
        """A loop we did not kill must not end by itself, but for one reason: it stalled past its lease (a
        starved machine) and a cancel took the lease meanwhile; it must stop acting then. Restart it."""
        if self.loop is not None and self.loop.poll() is not None:
            n = self.loops.index(self.loop)
            tail = (self.logs / f"loop-{n}.log").read_text()[-3000:]
            if "LeaseLost" not in tail:
                raise AssertionError(f"scheduler loop {n} (pid {self.loop.pid}) exited {self.loop.returncode} by itself:\n{tail}")
            self.loop = None
            self.figures["leases lost"] += 1
            self.start_loop()

    def kill_loop(self, at_start: bool) -> bool:
        if self.loop is None:
            return False
        os.killpg(self.loop.pid, signal.SIGKILL)
        self.kill_times.append(time.time())
        self.loop.wait()
        self.killed.add(self.loop.pid)
        self.loop = None
        self.figures["kills"] += 1
        self.figures["kills at a start"] += at_start
        return True

    def stop_loop(self) -> int:
        """SIGTERM, as systemd stops it: the loop releases the lease and exits 0."""
        os.killpg(self.loop.pid, signal.SIGTERM)
        code = self.loop.wait(60)
        self.loop = None
        return code

    def start_in_flight(self) -> bool:
        """A node committed STARTING whose start has not returned yet (no pid): the moment to kill."""
        row = self.store.one("SELECT count(*) AS n FROM job_nodes WHERE state = 'STARTING' AND pid IS NULL")
        return row["n"] > 0

    def submit(self, j: JobPlan) -> None:
        argv = ["submit", "--config", str(self.config), "--json", *j.argv()]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(argv)
        assert code == 0, out.getvalue()
        self.ids.append(json.loads(out.getvalue())["id"])
        self.figures["jobs"] += 1

    def cancel(self, job_id: int, waits: bool) -> None:
        wait = [] if waits else ["--timeout", "0"]
        with open(self.logs / f"cancel-{job_id}.out", "w") as out, open(self.logs / f"cancel-{job_id}.err", "w") as err:
            self.cancels[job_id] = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "cancel", str(job_id), *wait, "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self.env(),
            )  # fmt: skip
        self.figures["cancels"] += 1

    def settled(self) -> bool:
        live = self.store.one(
            "SELECT (SELECT count(*) FROM jobs WHERE state IN ('PENDING', 'STARTING', 'RUNNING'))"
            " + (SELECT count(*) FROM job_nodes WHERE state != 'EXITED') AS n"
        )["n"]
        return live == 0 and all(p.poll() is not None for p in self.cancels.values())

    def run(self, plan: Plan) -> None:
        """Play the plan's events at their times (seconds from now)."""
        events: list[tuple[float, str, object]] = [(j.at, "submit", i) for i, j in enumerate(plan.jobs)]
        events += [(j.at + j.cancel_after, "cancel", i) for i, j in enumerate(plan.jobs) if j.cancel_after is not None]
        events += [(at, "kill", (after, at_start)) for at, after, at_start in plan.kills]
        for kind, (host, at, seconds) in (("cut", plan.cut), ("freeze", plan.freeze)):
            events += [(at, kind, host), (at + seconds, "un" + kind, host)]
        armed: tuple[float, float] | None = None  # a kill waiting for a start in flight: (since, restart after)
        to_cancel: dict[int, float] = {}  # job id -> since when it waits to run, to be cancelled then
        self.start_loop()
        while events or armed or to_cancel:
            self.check_loop()
            for job_id, since in list(to_cancel.items()):
                if self.store.one("SELECT state FROM jobs WHERE id = ?", (job_id,))["state"] != "PENDING" or self.now() - since > 60.0:
                    self.cancel(job_id, waits=True)
                    del to_cancel[job_id]
            in_flight = armed is not None and self.start_in_flight()
            if armed is not None and (in_flight or self.now() - armed[0] > 15.0):
                if self.kill_loop(at_start=in_flight):
                    events.append((self.now() + armed[1], "restart", None))
                armed = None
            events.sort(key=lambda e: e[0])
            if not events or events[0][0] > self.now():
                time.sleep(0.02)
                continue
            _, kind, arg = events.pop(0)
            if kind == "submit":
                self.submit(plan.jobs[arg])
            elif kind == "cancel":
                if plan.jobs[arg].cancel_running:
                    to_cancel[self.ids[arg]] = self.now()
                else:
                    self.cancel(self.ids[arg], plan.jobs[arg].cancel_waits)
            elif kind == "kill":
                after, at_start = arg
                if at_start and armed is None:
                    armed = (self.now(), after)
                elif self.kill_loop(at_start=False):
                    events.append((self.now() + after, "restart", None))
            elif kind == "restart":
                if self.loop is None:
                    self.start_loop()
                    self.figures["restarts"] += 1
            elif kind == "cut":
                self.faults[arg] = ("cut", time.time(), None)
                self.cluster.cut(arg)
                self.figures["cuts"] += 1
            elif kind == "uncut":
                self.cluster.heal(arg)
                self.faults[arg] = (*self.faults[arg][:2], time.time())
            elif kind == "freeze":
                self.faults[arg] = ("freeze", time.time(), None)
                self.cluster.freeze(arg)
                self.figures["freezes"] += 1
            elif kind == "unfreeze":
                self.cluster.thaw(arg)
                self.faults[arg] = (*self.faults[arg][:2], time.time())
        if self.loop is None:
            self.start_loop()
            self.figures["restarts"] += 1

    def finish(self) -> None:
        """The last loop runs until every job is final and every node swept, then stops cleanly."""
        deadline = time.monotonic() + FINAL_DEADLINE
        while not self.settled():
            self.check_loop()
            if time.monotonic() > deadline:
                rows = self.store.query("SELECT id, state, reason FROM jobs WHERE state IN ('PENDING', 'STARTING', 'RUNNING')")
                nodes = self.store.query("SELECT job_id, attempt, node_rank, host, state FROM job_nodes WHERE state != 'EXITED'")
                raise AssertionError(f"not settled {FINAL_DEADLINE:g} s after the last fault: jobs {rows}, nodes {nodes}")
            time.sleep(0.2)

    def cleanup(self) -> None:
        for h in self.cluster.hosts:
            self.cluster.heal(h.name)
            self.cluster.thaw(h.name)
        for p in [*self.loops, *self.cancels.values()]:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if p in self.loops:
                        os.killpg(p.pid, signal.SIGKILL)
                    else:
                        p.kill()
                p.wait(10)


# --- the checks ----------------------------------------------------------------------------------

LOST_RE = re.compile(r"NODE_LOST: (.+?) stopped answering for over ")
EXITED_RE = re.compile(r"node \d+ on \S+ exited with status -?\d+")
NEVER_STARTED_RE = re.compile(r"node (\d+) on (\S+) never started \(the scheduler stopped while starting it\)")
COULD_NOT_START_RE = re.compile(r"could not start node (\d+) on ([^:\s]+): ")


def failure_unexplained(chaos: Chaos, attempt: dict, hosts: set[str]) -> str | None:
    """Why a FAILED attempt is not explained by a fault we injected (None: it is).

    NODE_LOST: every host it names is one we cut or froze, before the attempt ended. A node that exited
    non-zero: only while the link of one of the attempt's hosts was cut (torchrun's rendezvous store lives
    on node 0's host; a partition can fail the agents before the loop declares the node lost, and a loop
    restarted meanwhile counts node_lost_timeout from its own start). A frozen sshd fails no job: the
    job's own traffic does not pass through it."""
    reason, began, ended = attempt["reason"], attempt["started_at"], attempt["ended_at"]
    m = LOST_RE.match(reason)
    if m is not None:
        wrong = [h for h in m[1].split(", ") if h not in chaos.faults or ended < chaos.faults[h][1]]
        return f"names {wrong}, which we did not cut or freeze before it ended" if wrong else None
    if EXITED_RE.match(reason):
        cut = [h for h, (kind, start, end) in chaos.faults.items()
               if kind == "cut" and h in hosts and began <= (end or ended) and ended >= start]  # fmt: skip
        return None if cut else "a node failed, but no host of the attempt was cut while it ran"
    return "no fault we injected explains it"


def check(chaos: Chaos, plan: Plan, cancelled: set[int]) -> tuple[list[str], dict]:
    """Every problem found, and the figures of the outcome."""
    store, problems = chaos.store, []
    jobs = {r["id"]: r for r in store.query("SELECT * FROM jobs")}
    attempts: dict[int, list[dict]] = {}
    for a in store.query("SELECT * FROM attempts ORDER BY job_id, attempt"):
        attempts.setdefault(a["job_id"], []).append(a)
    nodes = {(n["job_id"], n["attempt"], n["node_rank"]): n for n in store.query("SELECT * FROM job_nodes")}
    starts: dict[tuple[int, int], int] = {}
    for e in store.query("SELECT object, reason FROM events WHERE what = 'STARTING'"):
        m = re.match(r"starting attempt (\d+) on ", e["reason"])
        key = (int(e["object"].removeprefix("job:")), int(m[1]) if m else -1)
        starts[key] = starts.get(key, 0) + 1

    if sorted(jobs) != sorted(chaos.ids):
        problems.append(f"jobs lost or invented: submitted {sorted(chaos.ids)}, the store has {sorted(jobs)}")
    procs = {i: j.procs for i, j in zip(chaos.ids, plan.jobs)}
    retries = {i: j.retries for i, j in zip(chaos.ids, plan.jobs)}

    # Final states, and every attempt's end.
    never_started: set[tuple[int, int, int]] = set()
    for job_id, job in sorted(jobs.items()):
        tries = attempts.get(job_id, [])
        where = f"job {job_id} ({job['state']}: {job['reason']})"
        if [a["attempt"] for a in tries] != list(range(1, job["attempt"] + 1)):
            problems.append(f"{where}: attempts {[a['attempt'] for a in tries]}, but the job says {job['attempt']}")
        for a in tries:
            n = a["attempt"]
            if starts.get((job_id, n), 0) != 1:
                problems.append(f"{where}: {starts.get((job_id, n), 0)} STARTING events for attempt {n}")
            state, reason, last = a["state"], a["reason"], n == job["attempt"]
            if state == "SUCCEEDED" and last and job["state"] == "SUCCEEDED":
                continue
            if state == "CANCELLED" and last and job_id in cancelled and job["state"] == "CANCELLED":
                continue
            if state == "FAILED":
                why = failure_unexplained(chaos, a, {x["host"] for k, x in nodes.items() if k[:2] == (job_id, n)})
                if why is not None:
                    problems.append(f"{where}: attempt {n} FAILED: {reason!r}: {why}")
                continue
            if state == "ABORTED":
                never = NEVER_STARTED_RE.fullmatch(reason)
                could_not = COULD_NOT_START_RE.findall(reason)
                if never:
                    never_started.add((job_id, n, int(never[1])))
                    if not any(a["started_at"] <= k <= a["ended_at"] for k in chaos.kill_times):
                        problems.append(f"{where}: attempt {n} {reason!r}, but we killed no loop while it started")
                elif could_not:
                    bad = [h for _, h in could_not if h not in chaos.faults or a["ended_at"] < chaos.faults[h][1]]
                    if bad:
                        problems.append(f"{where}: attempt {n} {reason!r}: {bad} were not faulted")
                else:
                    problems.append(f"{where}: attempt {n} ABORTED for a reason no fault explains: {reason!r}")
                continue
            problems.append(f"{where}: attempt {n} ended {state}: {reason!r}")
        if job_id in cancelled:
            if job["state"] != "CANCELLED":
                problems.append(f"{where}: we cancelled it")
        elif job["state"] == "FAILED":
            failed = [a for a in tries if a["state"] == "FAILED"]
            if not tries or tries[-1]["state"] != "FAILED" or len(failed) != retries.get(job_id, 0) + 1:
                problems.append(f"{where}: FAILED with {len(failed)} failed attempt(s) and --retries {retries.get(job_id)}")
        elif job["state"] != "SUCCEEDED":
            problems.append(f"{where}: not a true final state for a job we did not cancel")

    for key, n in sorted(nodes.items()):
        if n["state"] != "EXITED":
            problems.append(f"job {key[0]} attempt {key[1]} node {key[2]} on {n['host']} is {n['state']}")

    # Never launched twice: the ranks' own lines, host by host.
    lines: dict[tuple[int, int, int, int], list[str]] = {}
    for h in chaos.cluster.hosts:
        for ran in sorted((chaos.config.parent / "hosts" / h.name / "runs").glob("*/*/ran")):  # runs/STORE/JOB
            job_id = int(ran.parent.name)
            for line in ran.read_text().splitlines():
                words = line.split()
                if len(words) != 4 or not all(w.isdigit() for w in words) or int(words[0]) != job_id:
                    problems.append(f"{ran}: a line that is not a rank's: {line!r}")
                    continue
                j, a, k, r = map(int, words)
                n = nodes.get((j, a, k))
                if n is None or n["host"] != h.name or not 0 <= r < procs.get(j, 0):
                    problems.append(f"{ran}: {line!r} ran on {h.name}, but the store has no such node there ({n and n['host']})")
                lines.setdefault((j, a, k, r), []).append(h.name)
    for key, where in sorted(lines.items()):
        if len(where) > 1:
            problems.append(f"job {key[0]} attempt {key[1]} node {key[2]} rank {key[3]} ran {len(where)} times: {where}")
        if key[:3] in never_started:
            problems.append(f"job {key[0]} attempt {key[1]} node {key[2]} ran, but the store says it never started")
    # What the wrappers left: a SUCCEEDED attempt has every rank's line and an exit status 0 from every node;
    # where a node the store says never started was to run, torchrun never ran (it makes attempt-N/torchrun).
    for (j, n, k), node in sorted(nodes.items()):
        state = next((a["state"] for a in attempts.get(j, []) if a["attempt"] == n), None)
        base = Path(node["run_dir"]) / f"attempt-{n}" / f"node-{k}"
        if state == "SUCCEEDED":
            missing = [r for r in range(procs.get(j, 0)) if (j, n, k, r) not in lines]
            if missing:
                problems.append(f"job {j} attempt {n} SUCCEEDED, but node {k} ranks {missing} left no line")
            exit_file = base.with_suffix(".exit")
            if not exit_file.is_file() or exit_file.read_text() != "0\n":
                problems.append(f"job {j} attempt {n} SUCCEEDED, but {exit_file} is not 0")
        if (j, n, k) in never_started and (base.parent / "torchrun").exists():
            problems.append(f"job {j} attempt {n} node {k}: the store says it never started, but torchrun ran there")

    # Nothing left anywhere: by host through its namespace, and by run dir on the whole machine.
    for h in chaos.cluster.hosts:
        left = chaos.cluster.job_pids(h.name)
        if left:
            problems.append(f"{h.name} still runs job processes {left}")
    anywhere = job_processes([chaos.config.parent.resolve()])
    if anywhere:
        problems.append(f"job processes still running on this machine: {anywhere}")

    # A cancel that waits says the job is cancelled (verified, or what was not); one that does not wait either
    # found it waiting in the queue, or says it is not verified stopped yet.
    waits = {i: j.cancel_waits for i, j in zip(chaos.ids, plan.jobs)}
    for job_id, p in sorted(chaos.cancels.items()):
        out = (chaos.logs / f"cancel-{job_id}.out").read_text()
        err = (chaos.logs / f"cancel-{job_id}.err").read_text()
        said = p.returncode == 0 and f"job {job_id} cancelled" in out
        if not said and (waits[job_id] or p.returncode != 1 or f"job {job_id} is not verified stopped" not in err):
            problems.append(f"`headnode cancel {job_id}` exited {p.returncode}: {out.strip()!r} {err.strip()[-500:]!r}")

    by_state: dict[str, int] = {}
    for a in (a for tries in attempts.values() for a in tries):
        by_state[a["state"]] = by_state.get(a["state"], 0) + 1
    final: dict[str, int] = {}
    for job in jobs.values():
        final[job["state"]] = final.get(job["state"], 0) + 1
    ended = [f"job {a['job_id']} attempt {a['attempt']} {a['state']}: {a['reason'][:110]}"
             for _, tries in sorted(attempts.items()) for a in tries if a["state"] != "SUCCEEDED"]  # fmt: skip
    outcome = {
        "attempts": sum(by_state.values()), "attempts by state": by_state, "jobs by state": final,
        "ranks that ran": sum(len(w) for w in lines.values()), "other ends": ended,
    }  # fmt: skip
    return problems, outcome


def run_dir_of(config: Path, host: str, job_id: int) -> Path:
    """Where launch puts a job's run dir on a host: runs/STORE/JOB under the host's workdir."""
    from scheduler import launch

    inv = inventory.load(config)
    with Store.for_state_dir(inv.state_dir) as store:
        return Path(launch.run_dir(inv.host(host), job_id, store.id))


@pytest.mark.cluster
def test_chaos_kills_cuts_freezes_and_cancels_leave_every_job_final_once_and_nothing_running(
    cluster, cluster_config, tmp_path, capsys
):
    seed = int(os.environ.get("HEADNODE_CHAOS_SEED") or secrets.randbelow(2**32))
    with capsys.disabled():
        print(f"\nchaos: seed {seed} (replay with HEADNODE_CHAOS_SEED={seed})", flush=True)
    # The fixture's hosts.toml with 4 (declared) GPUs a host: GPU jobs spread over the hosts and queue a little.
    cluster.write_config(cluster_config, state_dir=tmp_path / "state", workdirs=tmp_path / "hosts", gpus=GPUS_PER_HOST)
    cluster_config.write_text(cluster_config.read_text() + SETTINGS)
    plan = Plan.make(random.Random(seed), [h.name for h in cluster.hosts])
    logs = tmp_path / "logs"
    logs.mkdir()
    # The store exists before the first loop: the test reads it throughout.
    assert main(["queue", "--config", str(cluster_config), "--json"]) in (0, None)
    capsys.readouterr()
    t0 = time.monotonic()
    with Store.for_state_dir(inventory.load(cluster_config).state_dir) as store:
        chaos = Chaos(cluster_config, logs, store, cluster)
        try:
            chaos.run(plan)
            chaos.finish()
            code = chaos.stop_loop()
        finally:
            chaos.cleanup()
        seconds = time.monotonic() - t0
        cancelled = {chaos.ids[i] for i, j in enumerate(plan.jobs) if j.cancel_after is not None}
        problems, outcome = check(chaos, plan, cancelled)
    exits = [p.returncode for p in chaos.loops]
    if code != 0 or any(p.returncode != -signal.SIGKILL for p in chaos.loops if p.pid in chaos.killed):
        problems.append(f"scheduler loops exited {exits}; the last should have exited 0 on SIGTERM, the others by SIGKILL")
    figures = {**chaos.figures, **outcome, "seconds": round(seconds, 1)}
    with capsys.disabled():
        cut, frozen = plan.cut, plan.freeze
        print(f"chaos: seed {seed}; cut {cut[0]} at {cut[1]:.1f} s for {cut[2]:.1f} s, "
              f"froze {frozen[0]} at {frozen[1]:.1f} s for {frozen[2]:.1f} s")  # fmt: skip
        others = figures.pop("other ends")
        print("chaos: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        for line in others:
            print(f"chaos:   {line}")
        sys.stdout.flush()
    assert not problems, f"seed {seed}: " + "\n".join(problems)


@pytest.mark.cluster
def test_a_cancel_nobody_waits_for_ends_the_job_even_when_its_host_is_lost_meanwhile(cluster, cluster_config, tmp_path):
    """Found by the chaos test's reading of its outcomes: a cancel is only an intent, and the loop must
    carry it out alone when nobody waits for it (`cancel --timeout 0`, a console that quit, the hang
    watcher's HEADNODE_ON_HANG=cancel). If the job's host stops answering meanwhile, the attempt ends
    NODE_LOST; with a retry left the job goes back to PENDING, where the loop places nothing that has a
    cancel asked. The job must end CANCELLED, not wait in the queue forever."""
    cluster_config.write_text(cluster_config.read_text() + SETTINGS)
    cfg = ["--config", str(cluster_config)]
    host = cluster.hosts[0].name  # a CPU job goes to the first host by name
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["submit", *cfg, "--json", "--retries", "1", "--", "sh", "-c", RANK, "chaos", "300"]) == 0
    job_id = json.loads(out.getvalue())["id"]
    ran = run_dir_of(cluster_config, host, job_id) / "ran"
    with Store.for_state_dir(inventory.load(cluster_config).state_dir) as store, scheduler(cluster_config):
        wait_state(store, job_id, {"RUNNING"}, timeout=60)
        deadline = time.monotonic() + 60
        while not ran.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ran.read_text() == f"{job_id} 1 0 0\n"
        cluster.cut(host)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert main(["cancel", *cfg, "--timeout", "0", str(job_id)]) == 1  # asked; not verified yet
            lost = wait_state(store, job_id, {"PENDING", "CANCELLED", "FAILED", "SUCCEEDED"}, timeout=90)
        finally:
            cluster.heal(host)
        row = wait_state(store, job_id, timeout=90)
        assert (row["state"], row["attempt"]) == ("CANCELLED", 1), (lost["reason"], row["reason"])
        deadline = time.monotonic() + 60  # the LOST node is swept once its host answers again
        while store.one("SELECT state FROM job_nodes WHERE job_id = ?", (job_id,))["state"] == "LOST" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert cluster.job_pids(host) == {}
    assert ran.read_text() == f"{job_id} 1 0 0\n"  # and it never ran again


@pytest.mark.cluster
def test_a_start_still_running_on_its_host_when_the_loop_dies_is_never_run_twice(cluster, cluster_config, tmp_path):
    """Found by the chaos test's kills at a start, on a slow host: a SIGKILLed loop drops its SSH session,
    but a start already running on the host goes on (a session without a terminal gets no SIGHUP). Here
    the host takes 15 s to run the start's port check (its Python is slow once, as on a loaded host), so
    the start lands long after the next loop found no trace of it and recorded the node as never started.
    That node must then never run: its torchrun does not start, the retry is the only attempt that runs."""
    slow, slept = tmp_path / "slow-python", tmp_path / "slept"
    slow.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-I" ] && mkdir {tmp_path / "slowed"} 2>/dev/null; then sleep 15; : > {slept}; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    slow.chmod(0o755)
    text = cluster_config.read_text().replace(f"python = {json.dumps(sys.executable)}", f"python = {json.dumps(str(slow))}")
    cluster_config.write_text(text + SETTINGS)
    cfg = ["--config", str(cluster_config)]
    host = cluster.hosts[0].name  # a CPU job goes to the first host by name
    with Store.for_state_dir(inventory.load(cluster_config).state_dir) as store:
        chaos = Chaos(cluster_config, tmp_path, store, cluster)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                assert main(["submit", *cfg, "--json", "--", "sh", "-c", RANK, "chaos", "5"]) == 0
            job_id = json.loads(out.getvalue())["id"]
            chaos.start_loop()
            deadline = time.monotonic() + 60
            while not (tmp_path / "slowed").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert chaos.start_in_flight()  # the start runs on the host, in its slow port check
            assert chaos.kill_loop(at_start=True)
            chaos.start_loop()
            row = wait_state(store, job_id, timeout=120)
            deadline = time.monotonic() + 60  # the late start lands, and whatever it started ends by itself
            while (not slept.exists() or cluster.job_pids(host)) and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2.0)
            left = cluster.job_pids(host)
            attempts = store.query("SELECT attempt, state, reason FROM attempts WHERE job_id = ? ORDER BY attempt", (job_id,))
            assert chaos.stop_loop() == 0
        finally:
            chaos.cleanup()
    run_dir = run_dir_of(cluster_config, host, job_id)
    never = [a["attempt"] for a in attempts if NEVER_STARTED_RE.fullmatch(a["reason"])]
    assert row["state"] == "SUCCEEDED" and never == [1], attempts
    assert [n for n in never if (run_dir / f"attempt-{n}" / "torchrun").exists()] == [], "a node recorded as never started ran torchrun"
    assert sorted((run_dir / "ran").read_text().splitlines()) == [f"{job_id} {row['attempt']} 0 0"]
    assert left == {}


@pytest.mark.cluster
def test_sweeping_a_lost_node_leaves_the_jobs_retry_on_the_same_host_running(cluster, cluster_config, tmp_path):
    """Found by reading the chaos test's outcomes: a LOST node is swept (every process of its job on its
    host stopped) once the host answers again, at most every node_lost_timeout; the host takes new work
    again once it has been quiet that long. Those are two timers: when the host comes back after a sweep
    failed (sshd restarting after a reboot refuses at once) and its quiet time ends first, the job's own
    retry may start there before the next sweep. The sweep must stop only what the lost attempt left,
    not the retry. Here the loop is stepped by hand and its two timers set to that order."""
    from scheduler import loop
    from scheduler.execute import Executor

    cluster_config.write_text(cluster_config.read_text() + SETTINGS)
    cfg = ["--config", str(cluster_config)]
    host = cluster.hosts[0].name
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for other in cluster.hosts[1:]:  # the retry can only go back to the same host
            assert main(["hosts", "drain", other.name, *cfg]) == 0
    inv = inventory.load(cluster_config)
    ran = run_dir_of(cluster_config, host, 1) / "ran"

    def cycle_until(done, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what}: {store.one('SELECT state, reason FROM jobs WHERE id = 1')}"
            sched.cycle()
            time.sleep(0.2)

    def state() -> str:
        return store.one("SELECT state FROM jobs WHERE id = 1")["state"]

    with Store.for_state_dir(inv.state_dir) as store:
        executor = Executor(inv)
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                assert main(["submit", *cfg, "--json", "--retries", "1", "--", "sh", "-c", RANK, "chaos", "12"]) == 0
            assert json.loads(out.getvalue())["id"] == 1
            sched = loop.Loop(inv, store, executor)
            cycle_until(lambda: state() == "RUNNING" and ran.exists(), "attempt 1 running")
            cluster.cut(host)
            try:
                cycle_until(lambda: state() == "PENDING", "attempt 1 lost")  # its sweep failed in that cycle
            finally:
                cluster.heal(host)
            sched.silent.pop(host, None)  # the host's quiet time is over ...
            sched.next_sweep[host] = time.time() + 3600  # ... and its next sweep is not due yet
            cycle_until(lambda: state() == "RUNNING" and len(ran.read_text().splitlines()) == 2, "attempt 2 running")
            sched.next_sweep[host] = 0.0  # now the sweep
            cycle_until(lambda: state() in ("SUCCEEDED", "FAILED", "CANCELLED"), "attempt 2 ended")
            cycle_until(lambda: store.one("SELECT count(*) AS n FROM job_nodes WHERE state = 'LOST'")["n"] == 0, "swept")
        finally:
            executor.close()
        row = store.one("SELECT state, attempt, reason FROM jobs WHERE id = 1")
    assert (row["state"], row["attempt"]) == ("SUCCEEDED", 2), row["reason"]
    assert sorted(ran.read_text().splitlines()) == ["1 1 0 0", "1 2 0 0"]
    assert cluster.job_pids(host) == {}

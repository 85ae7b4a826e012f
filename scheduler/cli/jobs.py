"""`headnode submit`, `queue`, `show`, `cancel`, `logs`, `wait`, `scheduler run`, `scheduler status`.

A thin layer over scheduler/jobs.py and scheduler/logs.py: parse, call, print. The commands only write intents into the
store; the scheduler loop acts on them (`cancel` does the teardown itself when no loop is running).
"""

from __future__ import annotations

import shlex
import sys
import time

from . import add_common, add_json
from ..control import CANCEL_TIMEOUT
from ..errors import UserError
from .. import bounds, humanize
from ..model import JobState
from ..table import print_table
from ..terminal import escape_controls as _clean

WAIT_TIMEOUT_EXIT = 124  # like timeout(1): the job was still live when --timeout ran out


def register(sub) -> None:
    p = sub.add_parser("submit", help="queue a job: COMMAND runs under torchrun on every node (default: the trainer)")
    p.add_argument("--name", help="a readable name (default: from the command, plus the id)")
    p.add_argument("--nodes", "-N", type=bounds.option("submit", "--nodes"), default=1, metavar="K", help="hosts to run on (default 1)")
    p.add_argument("--gpus-per-node", "-G", type=bounds.option("submit", "--gpus-per-node"), default=0, metavar="G",
                   help="GPUs on each host (default 0)")
    p.add_argument("--procs-per-node", type=bounds.option("submit", "--procs-per-node"), metavar="N",
                   help="processes on each host of a CPU job (--gpus-per-node 0; default 1)")
    p.add_argument("--data", metavar="NAME@VERSION",
                   help="dataset to train on; NAME alone pins its newest version (see `headnode data list`)")
    p.add_argument("--priority", type=bounds.option("submit", "--priority"), default=0, help="higher starts first (default 0)")
    p.add_argument("--time-limit", metavar="T", help="stop it after T: seconds, 30m, 2h, 1h30m or H:MM:SS")
    p.add_argument("--retries", type=bounds.option("submit", "--retries"), default=0, metavar="R",
                   help="run a failed job again up to R times")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable for the job (repeatable)")
    p.add_argument("--tag", action="append", default=[], help="run only on hosts with this tag (repeatable)")
    add_json(p)
    p.add_argument("command", nargs="...", metavar="-- COMMAND", help="what torchrun runs (default: python -m trainer)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("queue", help="pending and running jobs")
    p.add_argument("--all", action="store_true", help="finished jobs too")
    add_json(p)
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("show", help="one job: state, placement, exit status per node, attempts, data, metrics")
    p.add_argument("job", metavar="JOB", help="job id or unique name")
    add_json(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cancel", help="stop jobs everywhere and verify that no process is left")
    p.add_argument("jobs", nargs="+", metavar="JOB", help="job ids or unique names")
    p.add_argument("--timeout", type=bounds.option("cancel", "--timeout"), default=CANCEL_TIMEOUT, metavar="S",
                   help="give up waiting after S seconds (default 60)")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("logs", help="merged logs of a job, each line prefixed with its node and rank")
    p.add_argument("job", metavar="JOB", help="job id or unique name")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.add_argument("--node", type=bounds.option("logs", "--node"), metavar="K", help="only node K (0-based)")
    p.add_argument("--rank", type=bounds.option("logs", "--rank"), metavar="R", help="only global rank R")
    p.add_argument("--attempt", type=bounds.option("logs", "--attempt"), metavar="A", help="an earlier attempt (default: the latest)")
    p.add_argument("--raw", action="store_true",
                   help="print the output as written (on a terminal, control characters are escaped unless --raw)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "wait",
        help=f"block until a job ends; exit 0 if it succeeded, 1 if not, {WAIT_TIMEOUT_EXIT} on --timeout",
    )
    p.add_argument("job", metavar="JOB", help="job id or unique name")
    p.add_argument("--timeout", type=bounds.option("wait", "--timeout"), metavar="S", help="give up after S seconds")
    add_json(p)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("scheduler", help="the scheduler loop: run it, or see who runs it")
    ss = p.add_subparsers(dest="scheduler_command", metavar="ACTION", required=True)
    r = ss.add_parser("run", help="run the loop in the foreground (for systemd or tmux)")
    add_common(r)
    r.set_defaults(func=cmd_scheduler_run)
    s = ss.add_parser("status", help="who holds the lease and what the last cycle did; exit 1 if no loop runs")
    add_common(s)
    add_json(s)
    s.set_defaults(func=cmd_scheduler_status)


# --- submit, queue, show -------------------------------------------------------------------------


def cmd_submit(args, ctx) -> int:
    from .. import jobs

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    spec = jobs.JobSpec(
        command=command or list(jobs.DEFAULT_COMMAND),
        name=args.name,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        procs_per_node=args.procs_per_node,
        data=args.data,
        priority=args.priority,
        time_limit=jobs.parse_time_limit(args.time_limit) if args.time_limit is not None else None,
        retries=args.retries,
        env=jobs.parse_env(args.env),
        tags=args.tag,
    )
    job = jobs.submit(ctx.store, ctx.inventory, spec)
    if args.json:
        ctx.print_json({"id": job.id, "name": job.name, "state": job.state.value})
    else:
        print(f"submitted job {job.id} ({job.name})")
    unknown = [h for h, n in jobs.host_gpus(ctx.store, ctx.inventory).items() if n is None]
    if spec.gpus_per_node and unknown:
        print(
            f"headnode: note: the GPUs of {', '.join(unknown)} are not known yet; GPU jobs start there only after"
            " `headnode hosts probe` (or declare gpus in hosts.toml).",
            file=sys.stderr,
        )
    if spec.nodes > 1:
        from .. import rendezvous

        unmet = [n for n, m in rendezvous.meetings(ctx.store, ctx.inventory).items() if m.address is None]
        if unmet:
            print(
                f"headnode: note: {', '.join(unmet)} {'has' if len(unmet) == 1 else 'have'} no rendezvous address yet (an SSH"
                " alias is not one); multi-node jobs start there only after `headnode hosts probe` (or set rdzv_address"
                " in hosts.toml).",
                file=sys.stderr,
            )
    _warn_if_no_loop(ctx)
    return 0


def cmd_queue(args, ctx) -> int:
    from .. import jobs

    rows = jobs.summaries(ctx.store, include_finished=args.all)
    if args.json:
        ctx.print_json(rows)
        return 0
    if not rows:
        print("no jobs" if args.all else "no pending or running jobs (`headnode queue --all` shows finished ones)")
        return 0
    print_table(
        ["ID", "NAME", "STATE", "NODES", "GPUS", "AGE", "STEP", "LOSS", "HOSTS", "REASON"],
        [
            [
                r["id"],
                _clean(r["name"]),
                r["state"],
                r["nodes"],
                r["gpus_per_node"],
                humanize.age(r["submitted_at"], time.time()),
                _num(r["step"]),
                _num(r["loss"]),
                ",".join(r["hosts"]) or "-",
                _clean(r["reason"]),
            ]
            for r in rows
        ],
    )
    return 0


def cmd_show(args, ctx) -> int:
    from .. import jobs

    doc = jobs.show(ctx.store, jobs.find(ctx.store, args.job).id)
    if args.json:
        ctx.print_json(doc)
        return 0
    attempt = f" (attempt {doc['attempt']})" if doc["attempt"] else ""
    print(f"job {doc['id']}  {_clean(doc['name'])}  {doc['state']}{attempt}")
    limit = humanize.duration(doc["time_limit"]) if doc["time_limit"] else "none"
    fields = [
        ("reason", doc["reason"]),
        ("command", shlex.join(doc["command"])),
        ("shape", _shape(doc)),
        ("priority", doc["priority"]),
        ("time limit", limit),
        ("retries", doc["retries"]),
        ("data", doc["data"] or "-"),
        ("env", " ".join(f"{k}={shlex.quote(v)}" for k, v in doc["env"].items()) or "-"),
        ("tags", ", ".join(doc["tags"]) or "-"),
        ("user", doc["user"] or "-"),
        ("submitted", _when(doc["submitted_at"])),
        ("started", _when(doc["started_at"])),
        ("ended", _when(doc["ended_at"])),
        ("metrics", _metrics(doc["metrics"])),
    ]
    for key, value in fields:
        print(f"  {key + ':':<11} {_clean(value)}")
    if doc["nodes"]:
        print()
        print_table(
            ["NODE", "HOST", "GPUS", "PORT", "STATE", "EXIT", "PID", "RUN DIR"],
            [
                [n["node_rank"], n["host"], ",".join(map(str, n["gpus"])) or "-", n["port"], n["state"],
                 "-" if n["exit_code"] is None else n["exit_code"], n["pid"] or "-", n["run_dir"]]
                for n in doc["nodes"]
            ],
        )
    if len(doc["attempts"]) > 1:
        print()
        print_table(
            ["ATTEMPT", "STATE", "STARTED", "ENDED", "REASON"],
            [[a["attempt"], a["state"], _when(a["started_at"]), _when(a["ended_at"]), _clean(a["reason"])] for a in doc["attempts"]],
        )
    if doc["events"]:
        print()
        print_table(
            ["WHEN", "WHO", "WHAT", "REASON"],
            [[_when(e["ts"]), e["actor"], e["what"], _clean(e["reason"])] for e in doc["events"][-10:]],
        )
    return 0


def _shape(doc: dict) -> str:
    if doc["gpus_per_node"]:
        return f"{doc['nodes_requested']} node(s) x {doc['gpus_per_node']} GPU(s)"
    return f"{doc['nodes_requested']} node(s) x {doc['procs_per_node']} CPU process(es)"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _metrics(m: dict | None) -> str:
    if not m:
        return "-"
    items = sorted(m.items(), key=lambda kv: kv[0] != "step")  # the step first, then the rest as stored
    return "  ".join(f"{k} {_num(v)}" for k, v in items)


def _num(v) -> str:
    """Metrics come from the job's own metrics.jsonl: format numbers, show anything else as it is."""
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --- cancel, wait ----------------------------------------------------------------------------------


def cmd_cancel(args, ctx) -> int:
    from .. import control, jobs

    targets = [jobs.find(ctx.store, ref).id for ref in args.jobs]  # every lookup first: a typo cancels nothing

    def progress(elapsed: float, pending: list[int]) -> None:
        print(f"waiting for job(s) {', '.join(map(str, pending))} to stop on every host ({elapsed:.0f} s)", file=sys.stderr)

    def here(job_id: int) -> None:
        print(f"no scheduler loop is running; stopping job {job_id} from here", file=sys.stderr)

    outcomes = control.cancel(
        ctx.store, ctx.inventory, targets, timeout=args.timeout, executor=ctx.executor, progress=progress, on_here=here
    )
    for o in outcomes:
        if o.done:
            print(o.sentence())
        else:
            print(f"headnode: {o.sentence()}.", file=sys.stderr)
    return 0 if all(o.done for o in outcomes) else 1


def cmd_wait(args, ctx) -> int:
    from .. import control, jobs

    job = jobs.find(ctx.store, args.job)
    if not job.terminal:
        _warn_if_no_loop(ctx)
    job = control.wait(ctx.store, job.id, timeout=args.timeout)
    if args.json:
        ctx.print_json(jobs.summary(job))
    elif not job.terminal:
        print(f"job {job.id} is still {job.state} after {args.timeout:g} s: {job.reason}", file=sys.stderr)
    else:
        print(f"job {job.id} {job.state}: {job.reason}")
    if not job.terminal:
        return WAIT_TIMEOUT_EXIT
    return 0 if job.state == JobState.SUCCEEDED else 1


def _warn_if_no_loop(ctx) -> None:
    from .. import lease

    if lease.active(ctx.store) is None:
        print(
            "headnode: note: no scheduler loop is running, so nothing will start; run `headnode scheduler run`"
            " or open `headnode console`.",
            file=sys.stderr,
        )


# --- logs ----------------------------------------------------------------------------------------


def cmd_logs(args, ctx) -> int:
    from .. import jobs, logs

    job = jobs.find(ctx.store, args.job)
    if args.node is not None and not 0 <= args.node < job.nodes:
        raise UserError(f"job {job.id} has no node {args.node}", f"its nodes are 0..{job.nodes - 1}", "pick one of those")
    if args.attempt is not None and not 1 <= args.attempt <= job.attempt:
        raise UserError(f"job {job.id} has no attempt {args.attempt}", f"it has run {job.attempt} attempt(s)",
                        "omit --attempt for the latest")
    if job.attempt == 0 and not args.follow:
        raise UserError(f"job {job.id} has no logs yet", f"it is {job.state}: {job.reason}", "use -f to wait for them")

    def warn(text: str) -> None:
        print(f"headnode: {_clean(text)}", file=sys.stderr, flush=True)

    if args.follow and args.attempt is None:
        lines = logs.follow(ctx.store, ctx.executor, ctx.inventory, job.id, node=args.node, rank=args.rank, warn=warn)
    else:
        node_logs = logs.node_logs(ctx.store, job.id, args.attempt or job.attempt)
        lines = logs.read(ctx.executor, ctx.inventory, node_logs, node=args.node, rank=args.rank, warn=warn)
    raw = args.raw or not sys.stdout.isatty()  # piped: the bytes as written, for grep and files
    for line in lines:
        print(line if raw else _clean(line), flush=args.follow)
    return 0


# --- scheduler -----------------------------------------------------------------------------------


def cmd_scheduler_run(args, ctx) -> int:
    """Cycle until SIGINT/SIGTERM (systemd's stop), then release the lease so the next loop need not
    wait for it to expire. The jobs keep running; the next loop picks them up."""
    import signal
    import threading

    from .. import lease, loop

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    holder = lease.holder_id()
    print(f"scheduler loop {holder} on {ctx.inventory.state_dir}; Ctrl-C stops it (jobs keep running)", file=sys.stderr)
    def waiting(held) -> None:
        print(f"waiting for {held.describe()} to finish its teardown before starting", file=sys.stderr)

    loop.run_forever(ctx.inventory, stop_event=stop, holder=holder, on_wait=waiting)
    print("scheduler loop stopped; lease released", file=sys.stderr)
    return 0


def cmd_scheduler_status(args, ctx) -> int:
    from .. import lease

    cur = lease.current(ctx.store)
    active = cur is not None and not cur.expired()
    doc = {
        "running": active,
        "holder": cur and cur.holder,
        "kind": cur and cur.kind,
        "acquired_at": cur and cur.acquired_at,
        "expires_at": cur and cur.expires_at,
        "last_cycle_at": cur and cur.last_cycle_at,
        "last_cycle": cur and cur.last_cycle,
    }
    if args.json:
        ctx.print_json(doc)
    elif cur is None:
        print("no scheduler loop has run on this store; start one with `headnode scheduler run`")
    elif not active:
        gone = cur.dead_holder()
        ended = gone if gone is not None else f"its lease expired {humanize.age(cur.expires_at, time.time())} ago"
        print(f"no scheduler loop is running; the last was {cur.describe()}, {ended}")
    else:
        print(f"scheduler loop: {cur.describe()}; lease expires in {max(0.0, cur.expires_at - time.time()):.1f} s")
        if cur.last_cycle:
            print("last cycle: " + ", ".join(f"{k} {v}" for k, v in cur.last_cycle.items()))
    return 0 if active else 1

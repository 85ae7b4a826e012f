"""`headnode demo`: the first ten minutes on a fresh machine, with nothing but this package.

1. a small dataset: Python's own json and email packages (~430 kB of text that every Python has),
   byte-tokenized with `data prepare`, then synced (copied) to this machine's workdir;
2. a short CPU training run: one node, two processes (gloo), the `tiny` preset, 200 steps;
3. the scheduler loop (here, unless another loop already holds the lease) and the console on the
   job, where the loss falls live; headless with --no-console, printing a line per few steps;
4. a sample of generated text from the newest checkpoint (`python -m trainer.sample`).

It lives on the console side because it drives both: the scheduler library for the data, the job and
the loop, and the console (console.app, imported only when asked for) to watch. No Textual import at
the top: the headless path runs without it.
"""

from __future__ import annotations

import email
import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from scheduler import control, jobs, launch, lease
from scheduler.errors import UserError
from scheduler.inventory import Inventory
from scheduler.model import Job, JobState
from scheduler.store import Store

DATASET = "demo-stdlib"
STEPS = 200
PROCESSES = 2
PROMPT = "def "
SAMPLE_TIMEOUT = 300.0  # seconds for the sample at the end (torch starts slowly on a busy machine)
RUN_TIMEOUT = 600.0  # seconds: a demo that has not finished by then says so instead of hanging


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main(ctx, *, console: bool = True, steps: int | None = None) -> int:
    inventory = ctx.inventory
    local = _local_host(inventory)
    store = ctx.store
    say(f"state and runs under {inventory.state_dir}")
    data = prepare_dataset(store, ctx.executor, inventory, local)
    job = submit(store, inventory, data, steps or STEPS)
    say(f"submitted job {job.id} ({job.name}): {PROCESSES} CPU processes, {steps or STEPS} steps of the tiny GPT")

    stop = threading.Event()
    loop_thread = None
    holder = lease.active(store)
    if holder is None:
        kind = "console" if console else "foreground"
        loop_thread = threading.Thread(target=_run_loop, args=(inventory, kind, stop), name="demo-loop", daemon=True)
        loop_thread.start()
    else:
        say(f"the scheduler loop of {holder.holder} will run it")
    try:
        if console:
            _console(inventory, job.id)
        final = follow(store, job.id, quiet=console)
    finally:
        stop.set()
        if loop_thread is not None:
            loop_thread.join(timeout=30)
    if final.state != JobState.SUCCEEDED:
        say(f"job {final.id} ended {final.state}: {final.reason}; see `headnode logs {final.id}`")
        return 1
    m = final.metrics or {}
    say(f"trained to loss {m.get('loss', float('nan')):.3f} in {m.get('step')} steps, "
        f"{final.ended_at - final.submitted_at:.0f} s from submit to end")
    print(sample(local, final.id, store.id), flush=True)
    return 0


def _local_host(inventory: Inventory):
    local = [h for h in inventory.hosts if h.is_local]
    if not local or len(local) != len(inventory.hosts):
        raise UserError(
            "headnode demo runs on this machine alone",
            f"{inventory.source} lists hosts other than localhost",
            "run it in a directory without a hosts.toml (or point --config at a localhost-only file)",
        )
    return local[0]


def sources() -> list[str]:
    """Text every Python installation has: the json and email packages of the standard library."""
    return [str(Path(json.__file__).parent), str(Path(email.__file__).parent)]


def prepare_dataset(store: Store, executor, inventory: Inventory, host) -> str:
    """Tokenize (or find, the version being the content's hash) and copy it where the run reads it."""
    from scheduler.data import prepare, versions
    from scheduler.data.sync import sync

    t0 = time.monotonic()
    report = prepare.prepare(store, sources(), DATASET, tokenizer="byte", include=["*.py"], progress=False)
    ref = f"{report.name}@{report.version}"
    row = versions.resolve(store, ref)
    [synced] = sync(store, executor, [host], row)
    if synced.state != "verified":
        raise UserError(f"could not place {ref} on {host.name}", synced.detail or synced.state, "run `headnode data verify " + ref + "`")
    say(f"dataset {ref}: {report.tokens:,} byte tokens from Python's json and email sources, "
        f"placed and verified ({time.monotonic() - t0:.1f} s)")
    return ref


def submit(store: Store, inventory: Inventory, data: str, steps: int) -> dict:
    command = ["python", "-m", "trainer", "--model", "tiny", "--max-steps", str(steps), "--eval-every", "50",
               "--ckpt-every", str(steps), "--batch-size", "16"]
    spec = jobs.JobSpec(command=command, name="demo", nodes=1, gpus_per_node=0, procs_per_node=PROCESSES, data=data,
                        time_limit=RUN_TIMEOUT)
    return jobs.submit(store, inventory, spec)


def _run_loop(inventory: Inventory, kind: str, stop: threading.Event) -> None:
    from scheduler import loop

    try:
        loop.run_forever(inventory, kind=kind, stop_event=stop)
    except lease.LeaseHeld:  # another loop started meanwhile: it runs the job
        pass


def _console(inventory: Inventory, job_id: int) -> None:
    """The console on the job. The demo's own thread runs the loop (it must outlive the console, to
    see the run to its end), so the console embeds none; its header still says "embedded"."""
    from .app import build_app

    hint = "press q for a sample of what it learned"
    build_app(inventory, embedded_loop=False, job=job_id, on_job_end=hint).run()


def follow(store: Store, job_id: int, *, quiet: bool) -> Job:
    """Wait for the job to end, printing its progress (state changes, and the loss every few steps)."""
    seen = {"state": None, "step": -1}
    if quiet:
        say("waiting for the run to end (Ctrl-C leaves it running)")

    def report(job: Job) -> None:
        if quiet:
            return
        m = job.metrics or {}
        if job.state != seen["state"]:
            say(f"job {job_id} {job.state}: {job.reason}")
            seen["state"] = job.state
        step = m.get("step")
        if step is not None and step >= seen["step"] + 20:
            eval_loss = f"  eval {m['eval_loss']:.3f}" if m.get("eval_loss") is not None else ""
            say(f"step {step:4d}  loss {m.get('loss', float('nan')):.3f}{eval_loss}  {m.get('tokens_per_s') or 0:,.0f} tok/s")
            seen["step"] = step

    job = control.wait(store, job_id, timeout=RUN_TIMEOUT + 60, on_poll=report)
    if not job.terminal:
        raise UserError(f"job {job_id} has not ended after {RUN_TIMEOUT + 60:.0f} s", job.reason, f"see `headnode show {job_id}`")
    return job


def sample(host, job_id: int, store_id: str) -> str:
    run_dir = launch.run_dir(host, job_id, store_id)
    argv = [sys.executable, "-m", "trainer.sample", "--run-dir", run_dir, "--prompt", PROMPT, "--tokens", "200"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=SAMPLE_TIMEOUT)
    except subprocess.TimeoutExpired:  # a swamped machine: the run itself succeeded, say so and go on
        return f"demo: no sample (sampling took longer than {SAMPLE_TIMEOUT:.0f} s; try `{shlex.join(argv[1:])}`)"
    if r.returncode != 0:
        return f"demo: no sample ({(r.stderr.strip().splitlines() or ['?'])[-1]})"
    return f"demo: a sample from the trained model, prompted with {PROMPT!r}:\n\n{r.stdout.rstrip()}\n"

"""`headnode console` (also plain `headnode`) and `headnode demo`: the console's verbs on the command line.

The scheduler's CLI (scheduler/cli/) never imports this package: it finds these verbs through the
entry-point group `headnode.commands` (pyproject.toml), each entry a `register_*(subparsers)` here. So
the headless commands run where Textual is missing, and here Textual is imported only inside the
handlers (the other commands must not pay for it): without it, `headnode console` is one sentence on
how to install it.
"""

from __future__ import annotations

import argparse
import sys

from scheduler.errors import UserError

# The packages the console imports at its start (console.app, its screens and widgets); without one of
# them the console cannot open, and the headless commands still work.
UI_PACKAGES = ("textual", "textual_plotext", "plotext", "rich")


def register_console(sub) -> None:
    p = sub.add_parser("console", help="the interactive console (the default command)",
                       description="Open the terminal console. It runs the scheduler loop itself when no "
                                   "other loop holds the lease, and only reads and writes intents otherwise.")
    p.add_argument("--no-loop", dest="embedded_loop", action="store_false", default=None,
                   help="never run the scheduler loop in the console (only read the store and write intents)")
    p.add_argument("--job", type=str, metavar="JOB", help="open on this job (id or name)")
    p.set_defaults(func=cmd_console)


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="the first ten minutes: a dataset, a short CPU run, the console watching it",
                       description="Prepare a small dataset from Python's own sources, submit a short "
                                   "2-process CPU training run on this machine, run the scheduler, and show "
                                   "the loss falling; end with a sample of generated text.")
    p.add_argument("--no-console", action="store_true", help="do the same headless, printing progress; "
                                                              "exit 0 when the run succeeded")
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)  # tests run fewer
    p.set_defaults(func=cmd_demo)


def build_app_or_explain():
    """console.app.build_app, or a UserError saying how to install Textual when it is missing."""
    try:
        from .app import build_app
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in UI_PACKAGES:
            raise
        raise UserError(
            "the console needs the textual package",
            f"{e.name} is not installed for {sys.executable}",
            f"install it with `{sys.executable} -m pip install 'textual>=8.0' 'textual-plotext>=1.0'`;"
            " the headless commands (`headnode --help`) work without it",
        ) from e
    return build_app


def cmd_console(args, ctx) -> int:
    from scheduler import jobs

    build_app = build_app_or_explain()
    store = ctx.store  # opening it registers the inventory's hosts before the first screen reads them
    job = jobs.find(store, args.job).id if args.job else None
    app = build_app(ctx.inventory, embedded_loop=args.embedded_loop, job=job)
    app.run()
    return app.return_code or 0


def cmd_demo(args, ctx) -> int:
    from . import demo

    if not args.no_console:
        build_app_or_explain()  # before the demo prepares and submits anything
    return demo.main(ctx, console=not args.no_console, steps=args.steps)

"""`headnode console` (also plain `headnode`) and `headnode demo`.

Textual is imported inside the handlers: the other commands must not pay for it (FIELD-NOTES).
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("console", help="the interactive console (the default command)",
                       description="Open the terminal console. It runs the scheduler loop itself when no "
                                   "other loop holds the lease, and only reads and writes intents otherwise.")
    p.add_argument("--no-loop", dest="embedded_loop", action="store_false", default=None,
                   help="never run the scheduler loop in the console (only read the store and write intents)")
    p.add_argument("--job", type=str, metavar="JOB", help="open on this job (id or name)")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("demo", help="the first ten minutes: a dataset, a short CPU run, the console watching it",
                       description="Prepare a small dataset from Python's own sources, submit a short "
                                   "2-process CPU training run on this machine, run the scheduler, and show "
                                   "the loss falling; end with a sample of generated text.")
    p.add_argument("--no-console", action="store_true", help="do the same headless, printing progress; "
                                                              "exit 0 when the run succeeded")
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)  # tests run fewer
    p.set_defaults(func=cmd_demo)


def cmd_console(args, ctx) -> int:
    from . import jobs

    ctx.store  # registers the inventory's hosts in the store before the first screen reads them
    job = jobs.find(ctx.store, args.job).id if args.job else None
    from console.app import build_app

    app = build_app(ctx.inventory, embedded_loop=args.embedded_loop, job=job)
    app.run()
    return app.return_code or 0


def cmd_demo(args, ctx) -> int:
    from . import demo

    return demo.main(ctx, console=not args.no_console, steps=args.steps)

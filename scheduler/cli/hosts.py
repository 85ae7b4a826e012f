"""`headnode hosts`, `hosts probe`, `hosts drain`, `hosts undrain`."""

from __future__ import annotations

import sys

from . import add_json
from ..errors import UserError
from .. import humanize
from ..table import print_table


def register(sub) -> None:
    p = sub.add_parser("hosts", help="inventory with state, GPUs declared/detected and in use")
    add_json(p)
    p.set_defaults(func=cmd_hosts)
    hs = p.add_subparsers(dest="hosts_command", metavar="ACTION")

    pr = hs.add_parser("probe", help="check SSH, python, torch, CUDA, driver, GPUs and disk on hosts")
    pr.add_argument("names", nargs="*", metavar="HOST", help="hosts to probe (default: all)")
    pr.add_argument("--timeout", type=float, default=20.0, help="seconds per host (default 20)")
    add_json(pr)
    pr.set_defaults(func=cmd_probe)

    for name, draining, text in (("drain", True, "stop placing new jobs on a host"), ("undrain", False, "place jobs on a host again")):
        d = hs.add_parser(name, help=text)
        d.add_argument("name", metavar="HOST")
        d.set_defaults(func=cmd_drain, draining=draining)


def cmd_hosts(args, ctx) -> int:
    from .. import hosts

    rows = hosts.summaries(ctx.store, ctx.inventory)
    if args.json:
        ctx.print_json(rows)
        return 0
    print_table(
        ["HOST", "ADDRESS", "STATE", "GPUS", "IN USE", "TAGS", "REASON"],
        [
            [r["name"], r["address"], r["state"], _gpus(r), r["gpus_in_use"], ",".join(r["tags"]), r["reason"] or ""]
            for r in rows
        ],
    )
    return 0


def _gpus(r: dict) -> str:
    """The host's GPUs (rules.host_gpus), and the probe's count beside a declared one that differs."""
    total = "?" if r["gpus"] is None else str(r["gpus"])
    detected = r["gpus_detected"]
    differs = r["gpus_declared"] is not None and detected is not None and detected != r["gpus_declared"]
    return f"{total} (detected {detected})" if differs else total


def cmd_probe(args, ctx) -> int:
    from .. import hosts

    from ..execute import Executor

    if args.timeout <= 0:
        raise UserError(f"bad --timeout {args.timeout:g}", "it is the seconds each host may take",
                        "use a positive number, e.g. --timeout 10")
    targets = [ctx.inventory.host(n) for n in args.names] if args.names else list(ctx.inventory.hosts)
    # --timeout bounds the whole answer per host, the SSH connect included.
    with Executor(ctx.inventory, connect_timeout=min(args.timeout, 5.0)) as executor:
        entries = hosts.probe(executor, targets, timeout=args.timeout)
    hosts.record_probe(ctx.store, ctx.inventory, entries)
    if args.json:
        ctx.print_json(entries)
    else:
        print_table(
            ["HOST", "OK", "PYTHON", "TORCH", "CUDA", "DRIVER", "GPUS", "DISK FREE", "TIME"],
            [
                [
                    e["name"],
                    "ok" if e["ok"] else "FAIL",
                    e["python"] or "-",
                    e["torch"] or "-",
                    e["cuda"] or "-",
                    e["driver"] or "-",
                    "-" if e["gpus"] is None else e["gpus"],
                    humanize.size(e["disk_free_bytes"]) or "-",
                    f"{e['elapsed_s']:.1f}s",
                ]
                for e in entries
            ],
        )
        for e in entries:
            if e["reason"]:
                print(f"{e['name']}: {e['reason']}", file=sys.stderr)
    return 0 if all(e["ok"] for e in entries) else 1


def cmd_drain(args, ctx) -> int:
    from .. import hosts

    changed = hosts.set_draining(ctx.store, ctx.inventory, args.name, args.draining)
    verb = "draining" if args.draining else "undrained"
    print(f"{args.name}: {verb}" + ("" if changed else " (no change)"))
    return 0

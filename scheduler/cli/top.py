"""`headnode top [--once] [--json]` and `headnode metrics serve`.

`top` reads the store's `latest` table when a scheduler loop is collecting (its lease is held and the
samples are fresh); otherwise it samples the hosts itself: one round trip per host for --once, a
store-less Collector for the live table. The live table is plain ANSI (no textual on this path).

Without --once, `top` prints a frame every --interval (a table, or one JSON line with --json) whether
or not a new sample arrived meanwhile: the sampler's cadence is the host's, so a frame may repeat the
previous one's samples, and each host's `ts` says when its sample was taken.
"""

from __future__ import annotations

import json
import sys
import time

from . import add_json
from ..errors import UserError
from .. import bounds, humanize
from ..table import print_table

CLEAR = "\x1b[H\x1b[2J"


def register(sub) -> None:
    p = sub.add_parser("top", help="live utilisation of every GPU and host")
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--interval", type=bounds.option("top", "--interval"), default=None,
                   help="seconds between frames (default: telemetry interval); a frame shows the newest "
                        "sample of each host, which may be the previous frame's")
    add_json(p)
    p.set_defaults(func=cmd_top)

    m = sub.add_parser("metrics", help="export telemetry and job gauges to Prometheus")
    ms = m.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    s = ms.add_parser("serve", help="serve /metrics in the Prometheus text format")
    s.add_argument("--port", type=bounds.option("metrics serve", "--port"), default=9464, help="TCP port (default 9464)")
    s.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.set_defaults(func=cmd_metrics_serve)


def loop_is_collecting(store, settings, now: float) -> bool:
    from .. import lease

    if lease.active(store, now) is None:
        return False
    row = store.one("SELECT max(ts) AS ts FROM latest")
    return bool(row and row["ts"] and now - row["ts"] <= settings.down_after)


def cmd_top(args, ctx) -> int:
    from ..telemetry import view

    inv = ctx.inventory
    interval = inv.settings.telemetry_interval if args.interval is None else args.interval
    if interval <= 0:
        raise UserError("--interval must be positive", f"got {interval:g}", "pass seconds, e.g. --interval 2")
    store = ctx.store
    if loop_is_collecting(store, inv.settings, time.time()):
        snapshot = lambda: view.from_store(store, inv)  # noqa: E731
        return _show(args, snapshot, interval)
    from ..telemetry.attribution import live_jobs
    from ..telemetry.collector import Collector, sample_once

    if args.once:
        return _show(args, lambda: view.from_samples(inv, sample_once(inv, ctx.executor, list(inv.hosts)), live_jobs(store)), interval)
    with Collector(inv, store=False, executor=ctx.executor) as c:
        first = time.monotonic() + inv.settings.down_after
        while len(_collected(c)) < len(inv.hosts) and time.monotonic() < first:
            time.sleep(0.1)  # the first frame shows every host that answers at all
        return _show(args, lambda: view.from_samples(inv, _collected(c), live_jobs(store)), interval)


def _collected(c) -> dict:
    """What the collector has: a sample per host, or the reason it is down."""
    got = dict(c.latest)
    for name, (state, reason) in list(c.state.items()):
        if state == "down":
            got[name] = reason
    return got


def _show(args, snapshot, interval: float) -> int:
    while True:
        doc = snapshot()
        if args.json:
            print(json.dumps(doc, indent=None if not args.once else 2, default=str), flush=True)
        else:
            if not args.once and sys.stdout.isatty():
                sys.stdout.write(CLEAR)
            print_table(*table(doc))
            sys.stdout.flush()
        if args.once:
            return 0
        time.sleep(interval)


def table(doc: dict) -> tuple[list[str], list[list]]:
    headers = ["HOST", "STATE", "CPU", "MEM", "LOAD", "GPU", "MODEL", "UTIL", "GPU MEM", "TEMP", "POWER", "JOBS"]
    rows: list[list] = []
    for h in doc["hosts"]:
        jobs = ",".join(sorted(h["jobs"])) or ""
        load = f"{h['load'][0]:.2f}" if h.get("load") else None
        state = h["state"] if h["state"] != "down" else f"down: {h['reason']}"
        gpus = f"{len(h['gpus'])}" if h["gpus"] else "-"
        rows.append([h["name"], state, _pct(h["cpu_percent"]), _pct(h["mem_percent"]), load, gpus, "", "", "", "", "", jobs])
        for g in h["gpus"]:
            foreign = sum(1 for p in g["processes"] or [] if p["flag"])
            owners = ",".join(g["jobs"]) + (f" +{foreign} foreign" if foreign else "")
            rows.append(["", "", "", "", "", g["index"], _model(g.get("name")), _pct(g.get("util")), _mem(g),
                         _na(g.get("temp"), "C"), _power(g), owners])
    return headers, rows


def _pct(v) -> str:
    return humanize.percent(v) or "N/A"


def _na(v, unit: str = "") -> str:
    return "N/A" if v is None else f"{v}{unit}"


def _model(name: str | None) -> str:
    return (name or "N/A").removeprefix("NVIDIA ")


def _mem(g: dict) -> str:
    if g.get("mem_used") is None:
        return "N/A"
    return f"{humanize.size(g['mem_used'])}/{humanize.size(g['mem_total'])}"


def _power(g: dict) -> str:
    if g.get("power") is None:
        return "N/A"
    limit = g.get("power_limit")
    return f"{g['power']:.0f}W" + (f"/{limit:.0f}W" if limit else "")


def cmd_metrics_serve(args, ctx) -> int:
    from ..telemetry.prometheus import make_server

    _ = ctx.store  # opening it mirrors the inventory into the store before the first scrape
    try:
        server = make_server(ctx.inventory, args.bind, args.port)
    except OSError as e:
        raise UserError(f"cannot listen on {args.bind}:{args.port}", e.strerror or str(e), "pick another --port") from None
    print(f"serving Prometheus metrics on http://{args.bind}:{server.server_port}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

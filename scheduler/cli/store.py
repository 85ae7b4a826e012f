"""`headnode store init [--force]` and `headnode store show`: the store's identity.

Any first command on a fresh state dir makes the store (and says so); `init` does only that. Where the
state dir held a store that is now missing, empty or another store's, every command refuses with the
fix, and `init --force` is the explicit way to start over (or to adopt the store file that is there).
"""

from __future__ import annotations

import time

from . import add_json


def register(sub) -> None:
    p = sub.add_parser("store", help="the store: its id and file; start a new one explicitly")
    ss = p.add_subparsers(dest="store_command", metavar="COMMAND")
    s = ss.add_parser("init", help="make this state dir's store (a first command does so too)")
    s.add_argument("--force", action="store_true",
                   help="start a new store where the old one is missing, empty or damaged (moved aside), or adopt"
                        " the store file that is there; jobs still running on hosts are not known to a new store")
    s.set_defaults(func=cmd_store_init)
    s = ss.add_parser("show", help="the store's id, creation time, cluster and file")
    add_json(s)
    s.set_defaults(func=cmd_store_show)
    p.set_defaults(func=cmd_store_show)  # `headnode store` alone: show it


def cmd_store_init(args, ctx) -> int:
    from ..store import DB_NAME, init

    path = ctx.inventory.state_dir / DB_NAME
    done = init(path, cluster=ctx.inventory.cluster_name, force=args.force)
    print(done.sentence(path))
    return 0


def cmd_store_show(args, ctx) -> int:
    store = ctx.store
    i = store.identity
    jobs = store.one("SELECT count(*) AS n FROM jobs")["n"]
    doc = {**i.as_dict(), "path": str(store.path), "schema_version": store.schema_version, "jobs": jobs}
    if getattr(args, "json", False):
        ctx.print_json(doc)
        return 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.created_at))
    print(f"store {i.store_id} of cluster {i.cluster or '?'}, created {when}\n{store.path}: schema {store.schema_version},"
          f" {jobs} job{'s' if jobs != 1 else ''}")
    return 0

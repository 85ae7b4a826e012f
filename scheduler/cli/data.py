"""`headnode data prepare | register | list | show | sync | verify | prune`: a thin layer over
scheduler.data. numpy, tokenizers and fabric are imported inside the handlers that need them."""

from __future__ import annotations

import time

from . import add_json
from .. import humanize
from ..table import print_table

FAILED = 1  # a command that ran but left a host without a verified copy


def register(sub) -> None:
    p = sub.add_parser("data", help="datasets: prepare tokenized shards, version, sync and verify them on hosts")
    ds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    pr = ds.add_parser("prepare", help="tokenize text into shards and register a new version")
    pr.add_argument("sources", nargs="+", metavar="SRC", help="text files, directories (recursive) or .jsonl files")
    pr.add_argument("--name", required=True, help="dataset name")
    pr.add_argument("--tokenizer", default="byte",
                    help="byte (default), bpe[:VOCAB_SIZE] (trained on SRC), bpe:PATH (tokenizer.json), gpt2:PATH")
    pr.add_argument("--shard-tokens", type=int, default=None, metavar="T", help="tokens per shard (default 16Mi)")
    pr.add_argument("--val-fraction", type=float, default=None, metavar="F",
                    help="share of documents held out for validation (default 0.01)")
    pr.add_argument("--include", action="append", metavar="GLOB",
                    help="in directories, only files matching GLOB (repeatable; default all text files)")
    pr.add_argument("--exclude", action="append", metavar="GLOB",
                    help="in directories, skip files and directories matching GLOB (repeatable)")
    pr.add_argument("--text-field", default="text", metavar="FIELD", help="the text field of JSON-lines records (default text)")
    pr.add_argument("--workers", type=int, default=None, metavar="N",
                    help="tokenizer processes (default: all cores when the input is big enough)")
    add_json(pr)
    pr.set_defaults(func=cmd_prepare)

    rg = ds.add_parser("register", help="adopt an existing shard directory (manifest.json + shards) as a version")
    rg.add_argument("directory", metavar="DIR")
    rg.add_argument("--name", required=True, help="dataset name")
    add_json(rg)
    rg.set_defaults(func=cmd_register)

    ls = ds.add_parser("list", help="every dataset version with its size and how many hosts hold a verified copy")
    add_json(ls)
    ls.set_defaults(func=cmd_list)

    sh = ds.add_parser("show", help="one version: files, lineage (sources and runs) and its copy on every host")
    sh.add_argument("spec", metavar="NAME[@VERSION]")
    add_json(sh)
    sh.set_defaults(func=cmd_show)

    sy = ds.add_parser("sync", help="copy a version to hosts (parallel, resumable, skipping intact shards) and verify it there")
    sy.add_argument("spec", metavar="NAME[@VERSION]")
    sy.add_argument("hosts", nargs="*", metavar="HOST", help="default: every host")
    sy.add_argument("--transport", choices=("auto", "rsync", "sftp"), default="auto",
                    help="how files travel (default: rsync where both sides have it, else SFTP)")
    add_json(sy)
    sy.set_defaults(func=cmd_sync)

    vf = ds.add_parser("verify", help="re-hash the copies on the hosts themselves (no data comes back) and record the result")
    vf.add_argument("spec", metavar="NAME[@VERSION]")
    vf.add_argument("hosts", nargs="*", metavar="HOST", help="default: every host with a copy on record")
    add_json(vf)
    vf.set_defaults(func=cmd_verify)

    pn = ds.add_parser("prune", help="delete old versions from hosts (never one a live job uses)")
    pn.add_argument("spec", metavar="NAME[@VERSION]", help="NAME: all but the newest --keep versions; NAME@VERSION: that one")
    pn.add_argument("hosts", nargs="*", metavar="HOST", help="default: every host")
    pn.add_argument("--keep", type=int, default=1, metavar="K", help="with NAME alone, the newest versions to keep (default 1)")
    pn.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    add_json(pn)
    pn.set_defaults(func=cmd_prune)


def cmd_prepare(args, ctx) -> int:
    from ..data import prepare

    kw = {k: v for k, v in (("shard_tokens", args.shard_tokens), ("val_fraction", args.val_fraction)) if v is not None}
    r = prepare.prepare(
        ctx.store,
        args.sources,
        args.name,
        tokenizer=args.tokenizer,
        include=args.include,
        exclude=args.exclude,
        text_field=args.text_field,
        workers=args.workers,
        **kw,
    )
    if args.json:
        ctx.print_json(r.to_json())
        return 0
    verb = "prepared" if r.new else "unchanged: already registered as"
    print(f"{verb} {r.name}@{r.version}: {r.tokens:,} tokens ({r.train_tokens:,} train, {r.val_tokens:,} val) in {r.shards} shards")
    rate = humanize.size(r.bytes / r.seconds if r.seconds else 0)
    workers = f"{r.workers} worker{'s' if r.workers > 1 else ''}"
    print(f"  {r.documents:,} documents, {r.duplicates:,} exact duplicates dropped, {humanize.size(r.bytes)} of text, "
          f"{r.seconds:.1f}s ({rate}/s, {workers})")
    if r.skipped_binary:
        print(f"  {len(r.skipped_binary)} binary files skipped, e.g. {r.skipped_binary[0]}")
    print(f"  {r.path}")
    return 0


def cmd_register(args, ctx) -> int:
    from ..data import versions

    row, new = versions.register(ctx.store, args.directory, args.name)
    if args.json:
        ctx.print_json(_show(ctx, row))
        return 0
    verb = "registered" if new else "unchanged: already registered as"
    print(f"{verb} {row['name']}@{row['version']}: {row['tokens']:,} tokens in {row['shards']} shards")
    return 0


def cmd_list(args, ctx) -> int:
    from ..data import versions

    rows = versions.list_versions(ctx.store)
    hosts = len(ctx.inventory.hosts)
    if args.json:
        ctx.print_json(rows)
        return 0
    print_table(
        ["DATASET", "TOKENS", "SHARDS", "TOKENIZER", "VERIFIED ON", "CREATED", "BY"],
        [
            [f"{r['name']}@{r['version']}", humanize.count(r["tokens"]), r["shards"], r["tokenizer"], f"{r['verified']}/{hosts}",
             humanize.age(r["created_at"], time.time()), r["author"]]
            for r in rows
        ],
    )
    return 0


def cmd_show(args, ctx) -> int:
    from ..data import versions

    d = _show(ctx, versions.resolve(ctx.store, args.spec))
    if args.json:
        ctx.print_json(d)
        return 0
    print(f"{d['name']}@{d['version']}  {d['tokens']:,} tokens ({d['train_tokens']:,} train, {d['val_tokens']:,} val)")
    print(f"  tokenizer {d['tokenizer']['kind']} (vocab {d['vocab_size']}, {d['dtype']}), {d['shards']} shards, hash {d['hash']}")
    print(f"  created {time.strftime('%Y-%m-%d %H:%M', time.localtime(d['created_at']))} by {d['author']}, at {d['path']}")
    for s in d["sources"]:
        size = f", {humanize.size(s['bytes'])} in {s['files']} files" if "bytes" in s else ""
        print(f"  source {s['path']}{size}" + (f", sha256 {s['sha256'][:16]}…" if "sha256" in s else ""))
    print()
    print_table(
        ["HOST", "COPY", "SINCE", "DETAIL"],
        [[p["host"], p["state"], humanize.age(p["updated_at"], time.time()), p["detail"] or ""] for p in d["placements"]],
    )
    print()
    if d["runs"]:
        print_table(["JOB", "NAME", "STATE"], [[r["id"], r["name"], r["state"]] for r in d["runs"]])
    else:
        print("no run has used this version yet")
    return 0


def _show(ctx, row: dict) -> dict:
    from ..data import versions

    return versions.summary(row, [h.name for h in ctx.inventory.hosts], ctx.store)


def _targets(ctx, names: list[str]):
    return [ctx.inventory.host(n) for n in names] if names else list(ctx.inventory.hosts)


def cmd_sync(args, ctx) -> int:
    from ..data import sync, versions

    row = versions.resolve(ctx.store, args.spec)
    results = sync.sync(ctx.store, ctx.executor, _targets(ctx, args.hosts), row, transport=args.transport)
    if args.json:
        ctx.print_json([r.to_json() for r in results])
    else:
        print_table(
            ["HOST", "COPY", "SENT", "KEPT", "BYTES SENT", "VIA", "TIME", "DETAIL"],
            [
                [r.host, r.state, len(r.sent), r.kept, humanize.size(r.bytes_sent), r.transport or "-", f"{r.seconds:.1f}s", r.detail or ""]
                for r in results
            ],
        )
    return 0 if all(r.state == "verified" for r in results) else FAILED


def cmd_verify(args, ctx) -> int:
    from ..data import verify, versions

    row = versions.resolve(ctx.store, args.spec)
    names = args.hosts or sorted(versions.placements(ctx.store, row["name"], row["version"])) or [h.name for h in ctx.inventory.hosts]
    results = verify.verify(ctx.store, ctx.executor, [ctx.inventory.host(n) for n in names], row)
    if args.json:
        ctx.print_json([r.to_json() for r in results])
    else:
        print_table(["HOST", "COPY", "TIME", "DETAIL"], [[r.host, r.state, f"{r.seconds:.1f}s", r.detail or ""] for r in results])
    return 0 if all(r.state == "verified" for r in results) else FAILED


def cmd_prune(args, ctx) -> int:
    from ..data import prune

    results = prune.prune(ctx.store, ctx.executor, _targets(ctx, args.hosts), args.spec, keep=args.keep, dry_run=args.dry_run)
    ok = all(r["error"] is None for r in results)
    if args.json:
        ctx.print_json(results)
        return 0 if ok else FAILED
    if not results:
        print("nothing to prune")
    for r in results:
        what = f"{r['name']}@{r['version']} on {r['host']}"
        if r["error"]:
            print(f"failed to remove {what}: {r['error']}")
        elif r["kept"]:
            print(f"kept {what}: {r['kept']}")
        else:
            print(f"{'would remove' if args.dry_run else 'removed'} {what}")
    return 0 if ok else FAILED

"""`headnode`: a thin argparse layer over the scheduler library.

Each area of this package registers its own subcommands (hosts.py, jobs.py, data.py, top.py); a
handler is `handler(args, ctx) -> int`. Verbs from other packages come from the entry-point group
`headnode.commands` (the console's `console` and `demo`, see console/cli.py): the scheduler never
imports them by name, so the headless commands run where the console cannot, and are looked up only
when the command is not one of ours. Heavy imports (fabric, textual, torch) happen inside handlers,
so read commands start fast. A UserError becomes one sentence on stderr and its exit code; anything
else is an internal error, with the traceback only under HEADNODE_DEBUG=1 or --debug.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from functools import cached_property

from ..errors import UserError

AREAS = ("hosts", "jobs", "data", "top", "store")
PLUGINS = "headnode.commands"  # entry-point group: name = the verb, value = its register(subparsers)
DEFAULT_COMMAND = "console"    # plain `headnode` (DESIGN.md), when a plugin provides it
INTERNAL_ERROR = 70  # EX_SOFTWARE


class Context:
    """What handlers need, each piece built on first use from --config."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self._opened: list = []

    @cached_property
    def inventory(self):
        from .. import inventory

        return inventory.load(getattr(self.args, "config", None))

    @cached_property
    def store(self):
        from .. import hosts
        from ..store import Store, created_sentence

        store = Store.for_state_dir(self.inventory.state_dir, cluster=self.inventory.cluster_name)
        if store.created:  # a fresh state dir: said once, by whichever command came first
            print(f"headnode: {created_sentence(store.path, store.identity)}", file=sys.stderr)
        hosts.sync_inventory(store, self.inventory)
        self._opened.append(store)
        return store

    @cached_property
    def executor(self):
        from ..execute import Executor

        ex = Executor(self.inventory)
        self._opened.append(ex)
        return ex

    def print_json(self, obj) -> None:
        json.dump(obj, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")

    def close(self) -> None:
        for thing in reversed(self._opened):
            thing.close()


class _Parser(argparse.ArgumentParser):
    """argparse's own errors, in our one-sentence shape."""

    plugins_missing = False  # set on the top-level parser when the entry-point group was empty

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unavailable: dict[str, UserError] = {}  # plugin verbs whose module cannot be imported

    def error(self, message: str):
        where = self.prog.removeprefix("headnode").strip()
        fix = f"see `{self.prog} --help`"
        if self.plugins_missing and "invalid choice" in message:
            fix += (f"; this installation registers no verbs in the entry-point group {PLUGINS} (console, demo):"
                    " reinstall headnode (scripts/setup, or `pip install -e .` in a clone) to write its entry points")
        raise UserError(f"{where}: {message}" if where else message, None, fix)


def add_common(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Subcommands repeat --config with SUPPRESS so their default does not hide the top-level value.
    default = None if top else argparse.SUPPRESS
    p.add_argument("--config", metavar="PATH", default=default,
                   help="hosts.toml (default: $HEADNODE_CONFIG, else ./hosts.toml, else this machine alone)")
    p.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every verb; with `command` one of our own, the plugins are not looked up (that costs ~25 ms)."""
    parser = _Parser(
        prog="headnode",
        description="Queue, run and watch multi-node PyTorch training on your own GPU servers over SSH.",
    )
    add_common(parser, top=True)
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for area in AREAS:
        try:
            mod = importlib.import_module(f".{area}", __package__)
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{area}":
                continue  # that area has not landed
            raise
        mod.register(sub)
    if command is None or command not in sub.choices:
        parser.plugins_missing = not _add_plugins(parser, sub)
    _add_common_everywhere(sub)
    return parser


def _add_plugins(parser: _Parser, sub) -> int:
    """Register the verbs of the entry-point group PLUGINS; return how many entries it has.

    An entry whose module cannot be imported still gets its verb, listed in --help, which says why
    and what to do (parser.unavailable; main raises it before parsing that verb's arguments)."""
    from importlib.metadata import entry_points

    eps = entry_points(group=PLUGINS)
    for ep in eps:
        if ep.name in sub.choices:
            continue  # our own verbs, and the first entry of a name, win
        try:
            register = ep.load()
        except ImportError as e:
            parser.unavailable[ep.name] = UserError(
                f"`headnode {ep.name}` is not available here", f"{ep.module} cannot be imported ({e})",
                "reinstall headnode (scripts/setup, or `pip install -e .` in a clone); the headless commands work without it")
            sub.add_parser(ep.name, help=f"(not available here: {ep.module} cannot be imported)")
        else:
            register(sub)
    return len(eps)


def _command_word(argv: list[str]) -> str | None:
    """The verb in argv: the first word that is neither a top-level option nor --config's value. Only
    used to skip the plugin look-up for our own verbs, so an odd spelling just costs that look-up."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _add_common_everywhere(sub) -> None:
    for p in sub.choices.values():
        if not any(a.dest == "config" for a in p._actions):
            add_common(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                _add_common_everywhere(a)


class _Version(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs ~20 ms at every start)."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            from importlib.metadata import version

            text = f"headnode {version('headnode')}"
        except Exception:
            text = "headnode (not installed)"
        print(text)
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HEADNODE_DEBUG") == "1"
    ctx = None
    try:
        command = _command_word(argv)
        parser = build_parser(command)
        if command in parser.unavailable:
            raise parser.unavailable[command]
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            if args.command is None and DEFAULT_COMMAND in parser.unavailable:
                raise parser.unavailable[DEFAULT_COMMAND]
            if args.command is None and DEFAULT_COMMAND in parser._subparsers._group_actions[0].choices:
                args = parser.parse_args([*argv, DEFAULT_COMMAND])
            else:
                parser.print_help()
                return 2
        ctx = Context(args)
        return int(args.func(args, ctx) or 0)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"headnode: {e.sentence()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("headnode: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:
        if debug:
            traceback.print_exc()
        fault = _store_fault(e, ctx)
        if fault is not None:
            print(f"headnode: {fault.sentence()}", file=sys.stderr)
            return fault.exit_code
        print(
            f"headnode: internal error: {type(e).__name__}: {e}; this is a bug — rerun with HEADNODE_DEBUG=1 for the traceback"
            " and report it.",
            file=sys.stderr,
        )
        return INTERNAL_ERROR
    finally:
        if ctx is not None:
            ctx.close()


def _store_fault(e: Exception, ctx: Context | None):
    """A store fault met after the store opened (a full disk on a write, a damaged page on a read)
    as its one sentence, or None. Opening faults are StoreErrors already."""
    if ctx is None or type(e).__module__ != "sqlite3":
        return None
    from ..store import DB_NAME, fault

    store = ctx.__dict__.get("store")
    if store is not None:
        return fault(e, store.path)
    if "inventory" in ctx.__dict__:
        return fault(e, ctx.inventory.state_dir / DB_NAME)
    return None


if __name__ == "__main__":
    sys.exit(main())

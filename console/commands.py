"""The console's command language, shared by `:` command mode and the command palette.

`parse("cancel 12")` -> Command("cancel", ("12",)); each command names an App method `cmd_<name>`
that takes the arguments as strings. No Textual here, so parsing is tested on its own.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from scheduler.errors import UserError


@dataclass(frozen=True)
class Spec:
    name: str
    args: tuple[str, ...]  # argument names, for help and arity
    help: str
    aliases: tuple[str, ...] = ()


SPECS = (
    Spec("cluster", (), "Show the hosts and their GPUs", ("hosts", "1")),
    Spec("queue", (), "Show the job queue", ("jobs", "2")),
    Spec("datasets", (), "Show dataset versions and their placement", ("data", "3")),
    Spec("events", (), "Show the audit trail", ("4",)),
    Spec("job", ("JOB",), "Open a job: placement, loss chart, live log", ("show",)),
    Spec("submit", (), "Submit a job (form)", ("new",)),
    Spec("cancel", ("JOB",), "Cancel a job everywhere, with confirmation"),
    Spec("drain", ("HOST",), "Place no new jobs on a host"),
    Spec("undrain", ("HOST",), "Place jobs on a host again"),
    Spec("sync", ("NAME@VERSION",), "Copy a dataset version to every host"),
    Spec("verify", ("NAME@VERSION",), "Check every host's copy of a dataset version"),
    Spec("filter", ("TEXT",), "Filter the table on this screen"),
    Spec("help", (), "Show the keys and commands", ("?", "keys")),
    Spec("quit", (), "Leave the console (a running job keeps running)", ("q", "exit")),
)
BY_NAME = {n: s for s in SPECS for n in (s.name, *s.aliases)}


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]


def parse(text: str) -> Command:
    try:
        words = shlex.split(text.strip().lstrip(":"))
    except ValueError as e:
        raise UserError(f"cannot read {text!r}", str(e), "close the quote") from None
    if not words:
        raise UserError("empty command", None, "type a command such as `queue` or `job 12`, or `help`")
    spec = BY_NAME.get(words[0].lower())
    if spec is None:
        raise UserError(f"unknown command {words[0]!r}", None, f"known: {', '.join(s.name for s in SPECS)}")
    args = tuple(words[1:])
    if spec.name == "filter":  # the rest of the line, spaces included
        args = (" ".join(args),)
    elif len(args) != len(spec.args):
        usage = " ".join((spec.name, *spec.args))
        raise UserError(f"`{spec.name}` takes {len(spec.args) or 'no'} argument(s)", f"usage: {usage}", None)
    return Command(spec.name, args)


def usage(spec: Spec) -> str:
    return " ".join((spec.name, *spec.args))

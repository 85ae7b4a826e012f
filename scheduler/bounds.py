"""Bounds for every number a user can give headnode, and the one sentence that refuses the rest.

A number from the command line, the console's forms or hosts.toml ends up in SQLite (64-bit signed
integers), in `time.sleep`, in deadlines and in torchrun's argv. Python itself takes anything: 10**30,
nan, inf. So every number is checked here against a documented range, and a value outside it is a
UserError naming the option, the value (shortened: a hostile value must not flood the terminal),
the reason and the range to use.

Used three ways:
- argparse types: `type=bounds.int_in(1, MAX_NODES, "--nodes")`, `type=bounds.seconds(0, DAY, "--timeout")`.
  They raise UserError themselves (argparse lets it through), so the CLI says exactly what the library
  says for the same value.
- library checks: `bounds.check_int(spec.nodes, 1, MAX_NODES, "--nodes", field="nodes")`, so the
  console's submit form gets the same bounds and the same `field`.
- reasons without a name (`int_problem`, `number_problem`), for hosts.toml, which words its own
  sentences with file and line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from .errors import NotFound, UserError

INT64_MAX = 2**63 - 1  # SQLite INTEGER

# Jobs (the submit command line, the console's form, jobs.validate).
MAX_NODES = 4096  # hosts one job spans; also the most hosts an inventory may list
MAX_GPUS_PER_NODE = 1024  # GPUs a job asks for per host, and `gpus` a host may declare
MAX_PROCS_PER_NODE = 1024  # processes per host of a CPU job
MAX_RETRIES = 1000
MAX_PRIORITY = 10**6  # priorities are within -MAX_PRIORITY..MAX_PRIORITY
DAY = 86400.0
MAX_TIME_LIMIT = 365 * DAY  # a job's --time-limit; omit it for none
MAX_WAIT = 365 * DAY  # `wait --timeout`, `cancel --timeout`

# Job ids are SQLite row ids: a longer run of digits cannot name a job, and int() of it can be slow
# (or refused, past 4300 digits).
_JOB_ID_DIGITS = len(str(INT64_MAX))
_INT_RE = re.compile(r"[+-]?[0-9]+")


def shown(value: object, limit: int = 24) -> str:
    """A value as a message may quote it: short, one line, never a 10**30-digit wall."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        bits = value.bit_length()
        if bits <= 64:
            return str(value)
        return f"a {int(bits * math.log10(2)) + 1}-digit {'negative ' if value < 0 else ''}number"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > limit:
            if _INT_RE.fullmatch(text):
                return f"{text[:12]}… ({len(text.lstrip('+-'))} digits)"
            return repr(text[:limit]) + f"… ({len(text)} characters)"
        if text and text.isprintable() and " " not in text:
            return text
        return repr(text)
    if isinstance(value, (list, tuple)):
        items = [shown(v, limit) if not isinstance(v, (list, tuple, dict)) else "[…]" for v in value[:4]]
        return "[" + ", ".join(items + (["…"] if len(value) > 4 else [])) + "]"
    return "a table" if isinstance(value, dict) else type(value).__name__


# --- reasons ---------------------------------------------------------------------------------------


def int_problem(value: object, lo: int, hi: int) -> str | None:
    """Why value is not a whole number in lo..hi (None when it is)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "it is not a whole number"
    if value < lo:
        return f"it is below {lo}"
    if value > hi:
        return f"it is above {hi}"
    return None


def number_problem(value: object, lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> str | None:
    """Why value is not a finite number in the range (None when it is). Ints count as numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "it is not a number"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"it is {'below' if value < 0 else 'above'} {_num(lo if value < 0 else hi)}"
    if not math.isfinite(value):
        return "it is not a finite number"
    if value < lo or (open_lo and value == lo):
        return f"it must be above {_num(lo)}" if open_lo else f"it is below {_num(lo)}"
    if value > hi or (open_hi and value == hi):
        return f"it must be below {_num(hi)}" if open_hi else f"it is above {_num(hi)}"
    return None


def _num(x: float) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}" if isinstance(x, float) else str(x)


def int_range(lo: int, hi: int) -> str:
    return f"a whole number from {lo} to {hi}"


def number_range(lo: float, hi: float, unit: str = "", *, open_lo: bool = False, open_hi: bool = False) -> str:
    if open_lo or open_hi:
        low = f"above {_num(lo)}" if open_lo else f"at least {_num(lo)}"
        high = f"below {_num(hi)}" if open_hi else f"at most {_num(hi)}"
        text = f"a number {low} and {high}"
    else:
        text = f"a number from {_num(lo)} to {_num(hi)}"
    return text + (f" ({unit})" if unit else "")


# --- checks that raise -----------------------------------------------------------------------------


def check_int(
    value: object, lo: int, hi: int, name: str, *, field: str | None = None, low: str | None = None, fix: str | None = None
) -> int:
    """value itself if it is a whole number in lo..hi, else UserError("bad NAME VALUE: why; fix").
    low: the reason to give below lo, in the words of the option (e.g. "a job needs at least one node")."""
    why = int_problem(value, lo, hi)
    if why is None:
        return value  # type: ignore[return-value]
    raise _refused(name, shown(value), low if low and why.startswith("it is below") else why, fix or f"use {int_range(lo, hi)}", field)


def check_number(
    value: object,
    lo: float,
    hi: float,
    name: str,
    *,
    unit: str = "",
    open_lo: bool = False,
    open_hi: bool = False,
    field: str | None = None,
    fix: str | None = None,
) -> float:
    """float(value) if it is a finite number in the range, else UserError("bad NAME VALUE: why; fix")."""
    why = number_problem(value, lo, hi, open_lo=open_lo, open_hi=open_hi)
    if why is None:
        return float(value)  # type: ignore[arg-type]
    raise _refused(name, shown(value), why, fix or f"use {number_range(lo, hi, unit, open_lo=open_lo, open_hi=open_hi)}", field)


def _refused(name: str, value: str, why: str, fix: str, field: str | None) -> UserError:
    return UserError(f"bad {name} {value}", why, fix, field=field)


# --- argparse types --------------------------------------------------------------------------------


def parse_int(text: str) -> int | None:
    """ASCII digits with an optional sign as an int (None for anything else: "1e3", "1_000", "²").
    A run too long for 64 bits becomes a stand-in just past them, so that the range check says
    "above"/"below" without int() ever reading thousands of digits."""
    t = text.strip()
    if not _INT_RE.fullmatch(t):
        return None
    if len(t.lstrip("+-")) > _JOB_ID_DIGITS:
        return -(2**64) if t.startswith("-") else 2**64
    return int(t)


def int_in(
    lo: int, hi: int, name: str, *, field: str | None = None, low: str | None = None, fix: str | None = None
) -> Callable[[str], int]:
    """An argparse type: a whole number in lo..hi, else one sentence (exit 2) quoting the user's text."""

    def parse(text: str) -> int:
        value = parse_int(text)
        why = "it is not a whole number" if value is None else int_problem(value, lo, hi)
        if why is None:
            return value  # type: ignore[return-value]
        raise _refused(name, shown(text), low if low and why.startswith("it is below") else why, fix or f"use {int_range(lo, hi)}", field)

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def number_in(
    lo: float,
    hi: float,
    name: str,
    *,
    unit: str = "",
    open_lo: bool = False,
    open_hi: bool = False,
    field: str | None = None,
    fix: str | None = None,
) -> Callable[[str], float]:
    """An argparse type: a finite number in the range (nan, inf and 1e400 refused), else one sentence."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            why: str | None = "it is not a number"
        else:
            why = number_problem(value, lo, hi, open_lo=open_lo, open_hi=open_hi)
            if why is None:
                return value
        raise _refused(name, shown(text), why, fix or f"use {number_range(lo, hi, unit, open_lo=open_lo, open_hi=open_hi)}", field)

    parse.__name__ = "number"
    return parse


def seconds(lo: float, hi: float, name: str, **kw) -> Callable[[str], float]:
    """An argparse type for a duration in seconds: finite, lo..hi."""
    return number_in(lo, hi, name, unit="seconds", **kw)


# --- job ids ---------------------------------------------------------------------------------------


def job_id(ref: str) -> int:
    """A job id typed by a user (ASCII digits) as an int; one that no SQLite row can have is
    NotFound at once: 10**30, or a 5,000-digit run, is a job that does not exist, not an overflow."""
    digits = ref.strip().lstrip("0") or "0"
    if len(digits) > _JOB_ID_DIGITS or int(digits) > INT64_MAX:
        raise NotFound(f"job {shown(ref)} not found", "no job has that id", "run `headnode queue --all` to list jobs")
    return int(digits)


def is_job_id(ref: str) -> bool:
    """Digits only, ASCII: `'²'.isdigit()` is true, yet int('²') fails."""
    ref = ref.strip()
    return bool(ref) and ref.isascii() and ref.isdigit()


# --- a job's numbers -------------------------------------------------------------------------------

# (attribute, option, lo, hi, reason below lo): one table for the command line and jobs.validate.
JOB_INTS = (
    ("nodes", "--nodes", 1, MAX_NODES, "a job needs at least one node"),
    ("gpus_per_node", "--gpus-per-node", 0, MAX_GPUS_PER_NODE, "it cannot be negative"),
    ("procs_per_node", "--procs-per-node", 1, MAX_PROCS_PER_NODE, "a node runs at least one process"),
    ("priority", "--priority", -MAX_PRIORITY, MAX_PRIORITY, None),
    ("retries", "--retries", 0, MAX_RETRIES, "it cannot be negative"),
)


# Every numeric option of the command line, by (command, option): the argparse types that
# scheduler/cli_*.py use, so that every range is written here, once.
def _options() -> dict[tuple[str, str], Callable[[str], object]]:
    opts: dict[tuple[str, str], Callable[[str], object]] = {
        ("submit", option): int_in(lo, hi, option, field=attr, low=low) for attr, option, lo, hi, low in JOB_INTS
    }
    opts[("cancel", "--timeout")] = seconds(0, MAX_WAIT, "--timeout")
    opts[("wait", "--timeout")] = seconds(0, MAX_WAIT, "--timeout")
    opts[("logs", "--node")] = int_in(0, MAX_NODES - 1, "--node")
    opts[("logs", "--rank")] = int_in(0, MAX_NODES * MAX_PROCS_PER_NODE - 1, "--rank")
    opts[("logs", "--attempt")] = int_in(1, MAX_RETRIES + 1, "--attempt")
    opts[("hosts probe", "--timeout")] = seconds(0, 3600, "--timeout", open_lo=True)
    opts[("top", "--interval")] = seconds(0.1, 3600, "--interval")
    opts[("metrics serve", "--port")] = int_in(0, 65535, "--port")  # 0: any free port
    opts[("data prepare", "--shard-tokens")] = int_in(1, 1 << 32, "--shard-tokens")
    opts[("data prepare", "--val-fraction")] = number_in(0, 1, "--val-fraction", open_hi=True)
    opts[("data prepare", "--workers")] = int_in(1, 1024, "--workers")
    opts[("data prune", "--keep")] = int_in(0, 10**6, "--keep")
    opts[("demo", "--steps")] = int_in(1, 10**6, "--steps")
    return opts


OPTIONS = _options()


def option(command: str, flag: str) -> Callable[[str], object]:
    """The argparse type of `headnode COMMAND FLAG`, e.g. type=bounds.option("submit", "--nodes")."""
    return OPTIONS[(command, flag)]


def check_job(spec) -> None:
    """Every number of a JobSpec (duck-typed: jobs imports this module) in its range, else UserError
    with field= the attribute: the console's form gets what the command line gets."""
    for attr, option, lo, hi, low in JOB_INTS:
        value = getattr(spec, attr)
        if value is not None or attr != "procs_per_node":
            check_int(value, lo, hi, option, field=attr, low=low)
    if spec.time_limit is not None:
        check_number(
            spec.time_limit, 0, MAX_TIME_LIMIT, "time limit", unit="seconds", open_lo=True, field="time_limit",
            fix=f"give at most {MAX_TIME_LIMIT / DAY:g}d, or omit it for no limit",
        )

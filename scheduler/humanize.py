"""Numbers for humans, in one format for every front end (CLI tables, `headnode top`, the console).

Each returns a short string, and "" for a missing value (a table shows an empty cell; a CLI that
wants a dash writes `or "-"`). Standard library only: the headless commands import this.
"""

from __future__ import annotations


def duration(seconds: float | None) -> str:
    """H:MM:SS, or M:SS under an hour: a clock reading, exact to the second and aligned in columns."""
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def age(ts: float | None, now: float) -> str:
    """Time since ts in the largest whole unit, rounded down (42s, 17m, 3h, 12d): four characters
    for a narrow column, and "3h" never claims more time than passed."""
    if ts is None:
        return ""
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"


def size(n: float | None) -> str:
    """Bytes in powers of 1024 with one letter, as `ls -h` and `df -h` write them: 512B, 1.5K, 80G.
    One decimal under 10, none from there, and the next unit once the number would reach 1000."""
    if n is None:
        return ""
    if abs(n) < 1000:
        return f"{n:.0f}B"
    for unit in "KMGTP":
        n /= 1024
        if abs(n) < 9.95:
            return f"{n:.1f}{unit}"
        if abs(n) < 999.5 or unit == "P":
            return f"{n:.0f}{unit}"
    raise AssertionError("unreachable")


def count(n: float | None) -> str:
    """A count in thousands (k), millions (M) or billions (G) with one decimal (950, 12.3k, 4.1M):
    steps, tokens and tokens/s read at a glance; exact values are in --json."""
    if n is None:
        return ""
    if abs(n) < 999.5:
        return f"{n:.0f}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if abs(n / scale) < 999.95 or unit == "G":
            return f"{n / scale:.1f}{unit}"
    raise AssertionError("unreachable")


def percent(v: float | None) -> str:
    """A percentage, whole: 42%."""
    return "" if v is None else f"{v:.0f}%"

"""Cell formatters: plain values in, short strings or rich Text out. No Textual here. Durations,
ages, sizes and counts are scheduler.humanize's, the same as the CLI's; this adds the console's styling.

`now` is the console's clock; tests replace it to keep ages and times deterministic in snapshots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.text import Text

from scheduler import humanize

now: Callable[[], float] = time.time

STATE_STYLE = {
    "PENDING": "yellow", "STARTING": "cyan", "RUNNING": "bold green", "SUCCEEDED": "green",
    "FAILED": "bold red", "CANCELLED": "magenta", "TIMEOUT": "red",
    "up": "green", "down": "bold red", "draining": "yellow", "unknown": "dim",
    "verified": "green", "syncing": "cyan", "corrupt": "bold red", "absent": "dim",
}
SPARKS = "▁▂▃▄▅▆▇█"


def state(value: str | None) -> Text:
    return Text(value or "", style=STATE_STYLE.get(value or "", ""))


def age(ts: float | None) -> str:
    """humanize.age on the console's clock."""
    return humanize.age(ts, now())


def clock(ts: float | None) -> str:
    """A time of day, with the date when it is not today."""
    if ts is None:
        return ""
    t, today = time.localtime(ts), time.localtime(now())
    return time.strftime("%H:%M:%S" if t[:3] == today[:3] else "%m-%d %H:%M", t)


def fixed(v: float | None, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def bar(fraction: float | None, width: int, label: str = "") -> Text:
    """A horizontal bar with the label drawn over it: green, yellow past 60 %, red past 85 %."""
    if fraction is None:
        return Text("n/a".ljust(width), style="dim")
    f = max(0.0, min(1.0, fraction))
    filled = round(f * width)
    color = "red" if f > 0.85 else "yellow" if f > 0.6 else "green"
    text = label.rjust(width)[:width]
    out = Text(text[:filled], style=f"black on {color}")
    out.append(text[filled:], style="on grey23")
    return out


def sparkline(values: Sequence[float | None], width: int, top: float = 100.0) -> Text:
    """The last `width` values as block characters scaled to `top`."""
    vals = [v for v in values if v is not None][-width:]
    chars = "".join(SPARKS[min(len(SPARKS) - 1, int(max(0.0, v) / top * (len(SPARKS) - 1) + 0.5))] for v in vals)
    return Text(chars.rjust(width), style="cyan")


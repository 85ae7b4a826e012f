"""Plain-text tables for the headless commands (no rich/textual import on read paths); their units
are scheduler.humanize's."""

from __future__ import annotations

import sys


def print_table(headers: list[str], rows: list[list], file=None) -> None:
    file = file or sys.stdout
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=file)

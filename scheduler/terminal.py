"""What may reach the reader's terminal: text from jobs and hosts with its control characters shown
as escapes, so that a job's output, a name or a reason cannot move the cursor, retitle the window,
clear the screen or hide text (ESC sequences, NUL, BEL, backspace, carriage return, C1 controls).

One rule for everything headnode prints from outside: every C0 control but tab, DEL, and the C1
controls (U+0080..U+009F, which some terminals take as ESC sequences) become `\\xNN`.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def escape_controls(value: object) -> str:
    """str(value) with control characters (all but tab) written as `\\xNN`."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))

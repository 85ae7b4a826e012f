"""Streams a growing file from a host, for `headnode logs -f`: one long-lived command per node log.

    python log_follow.py PATH EXIT_PATH

Writes PATH's bytes to stdout as they are appended (waiting for PATH to appear), until EXIT_PATH
exists and PATH is drained, or until stdin closes (the head closed the stream: no reader is left
behind on the host). Polls every 250 ms.
"""

import os
import select
import sys


def follow(path: str, exit_path: str) -> None:
    out, f = sys.stdout.buffer, None
    while True:
        done = os.path.exists(exit_path)  # checked before reading: all written before it gets read below
        if f is None and os.path.exists(path):
            f = open(path, "rb")
        while f is not None:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
        if done:
            break
        ready, _, _ = select.select([sys.stdin], [], [], 0.25)
        if ready and not os.read(0, 4096):
            break


def main(argv=None) -> None:
    path, exit_path = sys.argv[1:] if argv is None else argv
    follow(path, exit_path)


if __name__ == "__main__":
    main()

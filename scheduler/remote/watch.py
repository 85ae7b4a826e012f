"""Waits on a host while the loop idles, and says as soon as one of the given running nodes ends.

    python watch.py NODES

NODES is a JSON list of {"job", "attempt", "node", "run_dir", "pid"}. Checks every 20 ms whether a
node ended (its process group is gone or its exit file appeared), so the loop notices a finished job
in ~20 ms instead of at its next cycle; prints one JSON line, the list of the nodes that ended, and
exits. It also ends, printing nothing, when its stdin closes (the loop closes the stream to wake it
or stop it) or after a minute at most.
"""

import json
import os
import select
import sys
import time

LIMIT = 60.0


def ended(n: dict) -> bool:
    try:
        os.killpg(n["pid"], 0)
    except OSError:
        return True
    return os.path.exists(f"{n['run_dir']}/attempt-{n['attempt']}/node-{n['node']}.exit")


def main(argv=None) -> None:
    (spec,) = sys.argv[1:] if argv is None else argv
    nodes = json.loads(spec)
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        done = [n for n in nodes if ended(n)]
        if done:
            print(json.dumps(done), flush=True)
            break
        if select.select([sys.stdin], [], [], 0.02)[0] and not os.read(sys.stdin.fileno(), 1):
            break


if __name__ == "__main__":
    main()

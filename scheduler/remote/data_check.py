"""Checks a dataset version's files on a host, for `data sync` (before and after) and `data verify`.

    python data_check.py DIR < REQUEST

REQUEST (stdin) is JSON: {"files": {NAME: [SIZE, SHA256]}, "mode": "check" | "verify", "mkdir": BOOL}.
Prints one JSON line: {"dir": DIR made absolute, "rsync": is rsync on PATH, "status": {NAME: "ok" |
"missing" | "size S, expected E" | "hash mismatch"}}. No file content comes back. Files are hashed on
a thread per core, up to 8 (hashlib releases the GIL).

"verify" re-hashes everything. "check" also trusts a file whose size and mtime match what the last
full hash recorded in DIR/.headnode-verified.json (rewritten after each run with the files found
good), so an unchanged version costs a stat per file; a file modified within a second of that record
is hashed again (racy timestamps, as git treats its index). "mkdir" creates DIR first.
Standard library of Python 3.7+ (no numpy, nothing installed).
"""

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

STAMP = ".headnode-verified.json"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                return h.hexdigest()
            h.update(b)


def check_dir(d: str, req: dict) -> dict:
    d = os.path.abspath(os.path.expanduser(d))
    if req.get("mkdir"):
        os.makedirs(d, exist_ok=True)
    stamp_path = os.path.join(d, STAMP)
    try:
        with open(stamp_path) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        stamp = {"written_ns": 0, "files": {}}

    def check(item):
        name, (size, digest) = item
        p = os.path.join(d, name)
        try:
            st = os.stat(p)
        except OSError:
            return name, "missing", None
        if st.st_size != size:
            return name, "size %d, expected %d" % (st.st_size, size), None
        seen = [st.st_size, st.st_mtime_ns, digest]
        if req["mode"] == "check" and stamp["files"].get(name) == seen and st.st_mtime_ns < stamp["written_ns"] - 10**9:
            return name, "ok", seen
        return (name, "ok", seen) if sha256(p) == digest else (name, "hash mismatch", None)

    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(check, sorted(req["files"].items())))
    good = {n: seen for n, state, seen in results if state == "ok"}
    if os.path.isdir(d) and good:
        tmp = stamp_path + ".%d.tmp" % os.getpid()
        with open(tmp, "w") as f:
            json.dump({"written_ns": time.time_ns(), "files": good}, f)
        os.replace(tmp, stamp_path)
    return {"dir": d, "rsync": bool(shutil.which("rsync")), "status": {n: s for n, s, _ in results}}


def main(argv=None) -> None:
    (d,) = sys.argv[1:] if argv is None else argv
    print(json.dumps(check_dir(d, json.load(sys.stdin))))


if __name__ == "__main__":
    main()

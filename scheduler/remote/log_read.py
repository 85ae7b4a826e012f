"""Reads whole files on a host, for `headnode logs`: one round trip for all of a host's node logs.

    python log_read.py PATH...

Prints one JSON object, {PATH: {"text": CONTENT} | {"error": WHY}} (UTF-8, undecodable bytes replaced;
a last line still being written comes as far as it got).
"""

import json
import sys


def read(paths) -> dict:
    out = {}
    for p in paths:
        try:
            with open(p, "rb") as f:
                out[p] = {"text": f.read().decode("utf-8", "replace")}
        except OSError as e:
            out[p] = {"error": e.strerror or str(e)}
    return out


def main(argv=None) -> None:
    json.dump(read(sys.argv[1:] if argv is None else argv), sys.stdout)


if __name__ == "__main__":
    main()

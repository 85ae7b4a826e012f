"""Runs one headnode program with the host's python: `python -c BOOTSTRAP PROGRAM ARG...`.

execute.python_argv sends every Python program this way; PROGRAM is the text of one of the files here
(as `source` gives it), run as __main__ with the ARGs as its sys.argv[1:]; it prints what PROGRAM prints.
`python -c` puts the working directory (the login home) first on sys.path, so a stray socket.py or json.py
there would replace the real module; `-I` would also drop the user's site-packages (where torch may
live), so this drops only that entry. PROGRAM is compiled whole, so its `from __future__` still works.
"""

import sys


def main() -> None:
    if sys.path and sys.path[0] in ("", "."):
        del sys.path[0]
    code = sys.argv.pop(1)
    exec(compile(code, "<headnode>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()

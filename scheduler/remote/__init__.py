"""The programs that run on hosts, one file each, and `source`, which gives their text to the code that ships them.

Nothing of headnode is installed on a host: a program is sent as text over the existing SSH connection
(`python -c` through bootstrap.py, or `sh -c`) and run by the host's own interpreter; `localhost` runs
the same argv here. So each program imports only the standard library (NVML and psutil where the host
has them, guarded) plus what `source` bundles, runs on its own as `python scheduler/remote/NAME.py
ARGS`, and does its work in main(), so importing it does nothing.

    bootstrap.py      runs each Python program below (drops the login directory from sys.path)   execute
    probe_host.py     `hosts probe`: python, torch, CUDA, driver, GPUs, disk                     hosts
    port_free.py      is the rendezvous port free (run by start.sh)                              launch
    start.sh          start one node of a job attempt detached, print its pid                    launch
    wrap.sh           run torchrun, then record its exit status                                  launch
    probe_nodes.py    what became of a host's nodes: alive, exit status, log and metrics         launch
    watch.py          wait until one of a host's running nodes ends                              launch
    kill.py           stop every process of a job, say what is left                              teardown
    log_read.py       a job's node logs, whole                                                   logs
    log_follow.py     one node log as it grows                                                   logs
    data_check.py     a dataset version's files, by size and SHA-256                             data.remote
    sampler.py        telemetry: one JSON line per interval (also sampled in-process for localhost)  telemetry

A program may import a headnode module that is itself standard-library only (probe_nodes.py reads
metrics lines with trainer.metrics's rule, the one the trainer writes by): `source` bundles that
module's text in front of the program, so the host runs the head's own code, still in one round trip.
Shell programs are sent without their comment lines: wrap.sh's text is the job's command line in `ps`
and in teardown reports for as long as the job runs.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from importlib import resources

# An import of a headnode module (a package in BUNDLED), as a statement at the start of a line. A
# regular expression rather than the ast module, whose parser is not safe to run in several threads
# at once on CPython 3.11 (python/cpython#106905), and the first calls come from a thread per host.
# tests/test_remote.py checks it against the ast for every program and every bundled module.
BUNDLED = ("trainer", "scheduler")
_MODULE = rf"(?:{'|'.join(BUNDLED)})\.[\w.]+"
_IMPORT = re.compile(rf"^[ \t]*(?:from[ \t]+({_MODULE})[ \t]+import|import[ \t]+({_MODULE}))\b", re.M)


@functools.cache
def source(name: str) -> str:
    """The text to ship for program `name` ("kill.py", "start.sh"), read once."""
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    if name.endswith(".sh"):
        return "".join(line for line in text.splitlines(keepends=True) if line.strip() and not line.lstrip().startswith("#"))
    modules = _bundled(text)
    if not modules:
        return text
    installs = "".join(f"_install({m!r}, {_module_text(m)!r})\n" for m in modules)
    run = f"exec(compile({text!r}, {name!r}, 'exec'), {{'__name__': '__main__', '__builtins__': __builtins__}})\n"
    return f"{_PRELUDE}{installs}del _install\n{run}"


# Installs a bundled module, and bare parent packages holding only what is bundled, before the program
# runs; a host's own copy of the package (if it has one) is not consulted.
_PRELUDE = """\
import sys, types
def _install(name, code):
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            sys.modules[parent] = types.ModuleType(parent)
            sys.modules[parent].__path__ = []
    module = sys.modules[name] = types.ModuleType(name)
    module.__file__ = name.replace(".", "/") + ".py"
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    if len(parts) > 1:
        setattr(sys.modules[".".join(parts[:-1])], parts[-1], module)
"""


def headnode_imports(text: str) -> set[str]:
    """The headnode modules a program's (or a bundled module's) text imports."""
    return {a or b for a, b in _IMPORT.findall(text)}


def _bundled(text: str) -> list[str]:
    """The headnode modules a program needs, each after the ones it needs itself."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(module: str) -> None:
        if module in seen:
            return
        seen.add(module)
        for dep in sorted(headnode_imports(_module_text(module))):
            visit(dep)
        order.append(module)

    for m in sorted(headnode_imports(text)):
        visit(m)
    return order


@functools.cache
def _module_text(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.loader is None or spec.submodule_search_locations is not None:
        raise ValueError(f"{module} cannot be bundled into a host program: only single-file modules can")
    return spec.loader.get_source(module)

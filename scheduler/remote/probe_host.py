"""What a host has, for `headnode hosts probe`: one round trip per host, all hosts at once.

    python probe_host.py [WORKDIR]

Prints one JSON line: {"hostname", "python", "python_too_old", "torch", "cuda", "driver", "gpus":
[{"index", "name", "mem_total"}], "cpus", "disk_free_bytes" (of WORKDIR, or of its nearest existing
parent), "load"}. It must be fast: torch is never imported (1.5 s), its version and CUDA build are
read from its installed version.py instead; GPUs come from NVML, else nvidia-smi, else there are none.
Written for any Python 3 (no f-strings): on a host whose python is too old it still has to say so.
"""

import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys


def torch_build():
    """(torch version, CUDA version) from torch's version.py, without importing torch."""
    version = cuda = None
    try:
        spec = importlib.util.find_spec("torch")
    except Exception:
        spec = None
    if spec is None or not spec.origin:
        return version, cuda
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            for line in f:
                key, _, value = line.partition("=")
                key = key.split(":")[0].strip()
                value = value.strip().strip("'\"")
                if key == "__version__":
                    version = value
                elif key == "cuda" and value not in ("None", ""):
                    cuda = value
    except OSError:
        pass
    return version, cuda


def gpus():
    """(driver version, [{index, name, mem_total}])."""
    found, driver = [], None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            drv = pynvml.nvmlSystemGetDriverVersion()
            driver = drv.decode() if isinstance(drv, bytes) else drv
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                mem = pynvml.nvmlDeviceGetMemoryInfo(h)
                found.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name, "mem_total": mem.total})
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, or no driver: try nvidia-smi, else this host has no GPUs
        if shutil.which("nvidia-smi"):
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    universal_newlines=True,
                    timeout=10,
                ).stdout
                for line in out.strip().splitlines():
                    idx, name, mem, drv = [p.strip() for p in line.split(",")]
                    found.append({"index": int(idx), "name": name, "mem_total": int(float(mem)) << 20})
                    driver = drv
            except Exception:
                pass
    return driver, found


def disk_free(workdir: str) -> int:
    path = os.path.expanduser(workdir)
    while path and not os.path.exists(path):
        path = os.path.dirname(path.rstrip("/")) or "."
    return shutil.disk_usage(path or ".").free


def facts(workdir: str) -> dict:
    torch, cuda = torch_build()
    driver, found = gpus()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "python_too_old": sys.version_info < (3, 9),
        "torch": torch,
        "cuda": cuda,
        "driver": driver,
        "gpus": found,
        "cpus": os.cpu_count(),
        "disk_free_bytes": disk_free(workdir),
        "load": load,
    }


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(facts(args[0] if args else ".")))


if __name__ == "__main__":
    main()

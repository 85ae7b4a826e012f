# Runs ON a host with its own python (`python -c`), standard library only: report what the host has,
# as one JSON line. It must be fast (one round trip per host): torch is never imported (1.5 s); its
# version and CUDA build are read from the installed files instead.
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys

workdir = sys.argv[1] if len(sys.argv) > 1 else "."
facts = {
    "hostname": socket.gethostname(),
    "python": platform.python_version(),
    "python_too_old": sys.version_info < (3, 9),
    "torch": None,
    "cuda": None,
    "driver": None,
    "gpus": [],
    "cpus": os.cpu_count(),
}
try:
    spec = importlib.util.find_spec("torch")
except Exception:
    spec = None
if spec is not None and spec.origin:
    tdir = os.path.dirname(spec.origin)
    try:
        with open(os.path.join(tdir, "version.py")) as f:
            for line in f:
                key, _, value = line.partition("=")
                key = key.split(":")[0].strip()
                value = value.strip().strip("'\"")
                if key == "__version__":
                    facts["torch"] = value
                elif key == "cuda" and value not in ("None", ""):
                    facts["cuda"] = value
    except OSError:
        pass

try:
    import pynvml

    pynvml.nvmlInit()
    try:
        drv = pynvml.nvmlSystemGetDriverVersion()
        facts["driver"] = drv.decode() if isinstance(drv, bytes) else drv
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            facts["gpus"].append({"index": i, "name": name.decode() if isinstance(name, bytes) else name, "mem_total": mem.total})
    finally:
        pynvml.nvmlShutdown()
except Exception:  # no pynvml, or no driver: try nvidia-smi, else this host has no GPUs
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10,
            ).stdout
            for line in out.strip().splitlines():
                idx, name, mem, drv = [p.strip() for p in line.split(",")]
                facts["gpus"].append({"index": int(idx), "name": name, "mem_total": int(float(mem)) << 20})
                facts["driver"] = drv
        except Exception:
            pass

path = os.path.expanduser(workdir)
while path and not os.path.exists(path):
    path = os.path.dirname(path.rstrip("/")) or "."
facts["disk_free_bytes"] = shutil.disk_usage(path or ".").free
try:
    facts["load"] = [round(x, 2) for x in os.getloadavg()]
except OSError:
    facts["load"] = None
print(json.dumps(facts))

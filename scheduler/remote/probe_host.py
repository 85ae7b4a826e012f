"""What a host has, for `headnode hosts probe`: one round trip per host, all hosts at once.

    python probe_host.py [WORKDIR [INTERFACE]]

Prints one JSON line: {"hostname", "python", "python_too_old", "torch", "cuda", "driver", "gpus":
[{"index", "name", "mem_total"}], "cpus", "disk_free_bytes" (of WORKDIR, or of its nearest existing
parent), "load", "interface": {"name", "address", "error", "interfaces"} (INTERFACE's IPv4 address, or
why there is none), "ssh_address" (this host's end of the SSH connection, from SSH_CONNECTION)}:
the last two are where the host's ranks can meet the others (scheduler/rendezvous.py).
It must be fast: torch is never imported (1.5 s), its version and CUDA build are
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


SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def interface(name):
    """{"name", "address" (IPv4, or None), "error" (why not), "interfaces" (the host's, when it is not there)}."""
    out = {"name": name, "address": None, "error": None, "interfaces": None}
    try:
        import fcntl
        import struct

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        finally:
            s.close()
        out["address"] = socket.inet_ntoa(packed[20:24])
    except OSError as e:
        out["error"] = "no such interface" if e.errno == 19 else "no IPv4 address" if e.errno == 99 else (e.strerror or str(e))
    except Exception as e:  # not Linux
        out["error"] = str(e) or type(e).__name__
    if out["address"] is None:
        try:
            out["interfaces"] = sorted(n for _, n in socket.if_nameindex())
        except (OSError, AttributeError):
            pass
    return out


def ssh_address():
    """The address this host was reached at over SSH: SSH_CONNECTION is 'CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT'."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    return parts[2] if len(parts) == 4 else None


def facts(workdir: str, iface: str = "") -> dict:
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
        "interface": interface(iface) if iface else None,
        "ssh_address": ssh_address(),
    }


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(facts(args[0] if args else ".", args[1] if len(args) > 1 else "")))


if __name__ == "__main__":
    main()

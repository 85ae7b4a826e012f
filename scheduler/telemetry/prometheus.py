"""Prometheus text exposition (format 0.0.4) of the present: hosts, GPUs and jobs.

`headnode metrics serve --port P` serves it from the store with the standard library's HTTP server;
each request reads the store in its own connection (one Store per thread).
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..inventory import Inventory
from ..store import Store, loads
from . import view

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name -> (help, how to get the value from a host entry / GPU / job)
HOST_GAUGES = {
    # a draining host streams too; one whose reachability is not known yet has no sample (ts None)
    "headnode_host_up": ("1 if the host streams telemetry", lambda h: 1 if h["state"] in ("up", "draining") and h["ts"] else 0),
    "headnode_host_cpu_utilization_ratio": ("CPU busy, all cores, 0-1", lambda h: _ratio(h["cpu_percent"])),
    "headnode_host_memory_used_bytes": ("memory in use (total - available)", lambda h: h["mem_used"]),
    "headnode_host_memory_total_bytes": ("physical memory", lambda h: h["mem_total"]),
    "headnode_host_disk_used_bytes": ("used space on the workdir's filesystem", lambda h: h["disk_used"]),
    "headnode_host_network_receive_bytes_per_second": ("received, all interfaces but lo", lambda h: h["net_rx_bps"]),
    "headnode_host_network_transmit_bytes_per_second": ("sent, all interfaces but lo", lambda h: h["net_tx_bps"]),
}
GPU_GAUGES = {
    "headnode_gpu_utilization_ratio": ("SM busy time, 0-1", lambda g: _ratio(g.get("util"))),
    "headnode_gpu_memory_used_bytes": ("GPU memory in use", lambda g: g.get("mem_used")),
    "headnode_gpu_memory_total_bytes": ("GPU memory", lambda g: g.get("mem_total")),
    "headnode_gpu_temperature_celsius": ("GPU temperature", lambda g: g.get("temp")),
    "headnode_gpu_power_watts": ("power draw", lambda g: g.get("power")),
    "headnode_gpu_power_limit_watts": ("enforced power limit", lambda g: g.get("power_limit")),
    "headnode_gpu_foreign_processes": (
        "processes on the GPU that belong to no live job",
        lambda g: sum(1 for p in g["processes"] or [] if p["flag"]),
    ),
}


def _ratio(percent):
    return None if percent is None else percent / 100


def render(store: Store, inventory: Inventory) -> str:
    doc = view.from_store(store, inventory)
    out: list[str] = []
    for name, (text, get) in HOST_GAUGES.items():
        _family(out, name, text, [({"host": h["name"]}, get(h)) for h in doc["hosts"]])
    for name, (text, get) in GPU_GAUGES.items():
        _family(out, name, text, [(_gpu_labels(h, g), get(g)) for h in doc["hosts"] for g in h["gpus"]])
    _family(
        out,
        "headnode_gpu_job_info",
        "1 for each job with processes on the GPU",
        [({**_gpu_labels(h, g), "job": j}, 1) for h in doc["hosts"] for g in h["gpus"] for j in g["jobs"]],
    )
    _jobs(out, store)
    return "\n".join(out) + "\n"


def _gpu_labels(h: dict, g: dict) -> dict:
    return {"host": h["name"], "gpu": str(g["index"]), "model": g.get("name") or ""}


def _jobs(out: list[str], store: Store) -> None:
    rows = store.query("SELECT id, name, state, metrics, flags FROM jobs WHERE state IN ('PENDING', 'STARTING', 'RUNNING')")
    states = [({"job": str(r["id"]), "name": r["name"], "state": r["state"]}, 1) for r in rows]
    _family(out, "headnode_job_state", "1 for the state each live job is in", states)
    metrics = [(r, loads(r["metrics"], {}) or {}) for r in rows]
    for name, key, text in (
        ("headnode_job_tokens_per_second", "tokens_per_s", "training throughput from the last metrics line"),
        ("headnode_job_loss", "loss", "training loss from the last metrics line"),
        ("headnode_job_step", "step", "training step from the last metrics line"),
    ):
        _family(out, name, text, [({"job": str(r["id"]), "name": r["name"]}, m.get(key)) for r, m in metrics])
    _family(
        out,
        "headnode_job_flag",
        "1 for each alert raised on a live job (hang, idle-gpus)",
        [({"job": str(r["id"]), "name": r["name"], "flag": f}, 1) for r in rows for f in loads(r["flags"], [])],
    )


def _family(out: list[str], name: str, text: str, samples: list[tuple[dict, object]]) -> None:
    samples = [(labels, v) for labels, v in samples if isinstance(v, (int, float))]
    out.append(f"# HELP {name} {text}")
    out.append(f"# TYPE {name} gauge")
    for labels, v in samples:
        inner = ",".join(f'{k}="{_escape(str(val))}"' for k, val in labels.items())
        out.append(f"{name}{{{inner}}} {float(v):g}")


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def make_server(inventory: Inventory, bind: str = "127.0.0.1", port: int = 9464) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served")
                return
            with Store.for_state_dir(inventory.state_dir) as store:  # each request has its own thread
                body = render(store, inventory).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every few seconds would flood the terminal
            pass

    return ThreadingHTTPServer((bind, port), Handler)

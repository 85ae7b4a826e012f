"""`data verify`: re-hash the copies on the hosts themselves and record what they found.

One round trip per host, all hosts at once; the host's own python hashes its files (remote.CHECK in
"verify" mode), so no data crosses the network, only a verdict per file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from scheduler.data import remote
from scheduler.data.versions import host_path, set_placement
from scheduler.execute import Executor
from scheduler.inventory import Host
from scheduler.store import Store

VERIFY_TIMEOUT = 3600.0  # a full re-hash of a big dataset at ~1 GB/s per core


@dataclass
class HostCheck:
    host: str
    state: str  # verified | corrupt | absent, or unreachable (the placement is then left as it was)
    bad: dict[str, str] = field(default_factory=dict)  # {file: problem}
    detail: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def verify(store: Store, executor: Executor, hosts: list[Host], row: dict) -> list[HostCheck]:
    files = remote.expected_files(row)
    name, version = row["name"], row["version"]
    answers = executor.python_many(
        hosts, remote.CHECK, lambda h: [host_path(h, name, version)], input=remote.order(files, "verify"), timeout=VERIFY_TIMEOUT
    )
    out = []
    for h in hosts:
        res = answers[h.name]
        check = HostCheck(h.name, "unreachable", seconds=res.elapsed)
        try:
            status = json.loads(res.stdout.strip().splitlines()[-1])["status"] if res.ok else None
        except (ValueError, IndexError, KeyError):
            status = None
        if status is None:
            check.detail = res.reason or f"the check program answered {res.stdout[:200]!r}"
        else:
            check.bad = remote.problems(status)
            check.detail = remote.describe(check.bad, len(files))
            everything_missing = len(check.bad) == len(files) and all(s == "missing" for s in check.bad.values())
            check.state = "absent" if everything_missing else "corrupt" if check.bad else "verified"
            set_placement(store, name, version, h.name, check.state, check.detail)
        out.append(check)
    return out

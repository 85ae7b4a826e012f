"""Telemetry: GPU and host utilisation from every host, job attribution, hang detection, export.

    ../remote/sampler.py  the host-side program, shipped as text over SSH (stdlib only at import)
    collector.py    one stream per host in the loop's process; batches into the store; up/down
    ingest.py       history + `latest` writes, retention by downsampling
    attribution.py  processes -> jobs; foreign and stale processes on GPUs
    hang.py         hang and idle-GPU verdicts (pure) and check_hangs (flags + alert events)
    view.py         the `top --json` document;  prometheus.py  the text exposition
"""

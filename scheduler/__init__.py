"""Everything headless: the library (inventory, store, policy, execute, launch, loop, teardown, logs,
data/, telemetry/) and its command line, scheduler/cli/ (`headnode`, also `python -m scheduler`).

Never imports the console (console/ imports this package); from trainer/ only the shared formats
trainer.shards and trainer.metrics. pyproject.toml's [tool.importlinter] contracts hold it to that.
"""

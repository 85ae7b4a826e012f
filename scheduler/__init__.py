"""Everything headless: the library (inventory, store, model, lifecycle, jobs, rules, policy, execute,
launch, teardown, control, loop, lease, logs, data/, telemetry/, remote/ for the programs that run on
hosts) and its command line, scheduler/cli/ (`headnode`, also `python -m scheduler`). README.md's
Layout section says what each module is for.

Never imports the console (console/ imports this package); from trainer/ only the shared formats
trainer.shards and trainer.metrics. pyproject.toml's [tool.importlinter] contracts hold it to that.
"""

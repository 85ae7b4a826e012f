"""GPT pretraining from token shards, run by torchrun on every host (see train.py for the commands).

    shards.py       the dataset format (shared with `headnode data`)
    data.py         deterministic, resumable per-rank batches from memory-mapped shards
    model.py        the GPT: config, presets, FLOPs per token, sampling
    parallelize.py  DDP / FSDP2 / tensor parallel / FSDP+TP, applied to the plain model
    loop.py         the training loop;  config.py its command line;  train.py the entry point
    checkpoint.py   DCP checkpoints;  metrics.py the metrics.jsonl lines (stdlib only)
    sample.py       text from a run's newest checkpoint

Imports neither scheduler nor console: hosts need only torch and numpy.
"""

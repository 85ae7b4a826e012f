"""Pretrain a GPT on token shards: one CPU process, or hosts x GPUs under torchrun.

    python -m trainer --data DATA --run-dir RUN --model tiny --max-steps 200
    torchrun --standalone --nproc-per-node 8 -m trainer --data DATA --run-dir RUN --model gpt2-124m --parallel fsdp
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id RUN1 \\
        --rdzv-conf is_host=1 -m trainer ...            # is_host=0 on the other node

--data defaults to $HEADNODE_DATA and --run-dir to $HEADNODE_RUN_DIR (what headnode sets). The device
is CUDA with NCCL when there is one, else the CPU with gloo (then the cores are split between the
local ranks). On start the run resumes from the newest complete checkpoint in the run dir.

Exit status, for whoever started the run:
    0    trained to --max-steps (or found a checkpoint that already had); final checkpoint written
    143  stopped early by SIGTERM or SIGINT: the step in flight was finished and checkpointed, so a
         rerun in the same run dir continues exactly there. Not 0, because the run did not finish:
         a scheduler that did not send the signal (a host shutting down) must not record success.
    2    bad input (missing data, unknown preset, batch that does not divide): one line on stderr
    1    anything else (a traceback on stderr)
The process ends with os._exit after flushing its files: a finished script sometimes aborted at
interpreter exit under torchrun ("terminate called without an active exception", FIELD-NOTES), which
turned successful runs into failed ones.
"""

from __future__ import annotations

import os
import signal
import sys

from trainer.config import UsageError, parse_args

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as e:
        print(f"trainer: {e}", file=sys.stderr)
        return EXIT_USAGE

    import torch.distributed as dist

    from trainer.loop import Trainer

    trainer = None
    try:
        trainer = Trainer(args)
        finished = trainer.run()
        if dist.is_initialized():
            # Every rank leaves its last collective (the final checkpoint) before any rank tears the
            # group down; a rank still inside one when its peer exits was seen waiting forever.
            dist.barrier()
        return EXIT_OK if finished else EXIT_STOPPED
    except UsageError as e:
        print(f"trainer: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if trainer is not None:
            trainer.close()
        if dist.is_initialized():
            dist.destroy_process_group()


def run(argv: list[str] | None = None) -> None:
    """The process entry point: main, then flush and leave without interpreter teardown."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's --help (0) and usage errors (2)
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    except BaseException:  # a crash: print it like Python would, then take the same exit path
        import traceback

        traceback.print_exc()
        code = EXIT_CRASH
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()

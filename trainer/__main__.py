"""`python -m trainer ...`: see trainer/train.py."""

from trainer.train import run

run()

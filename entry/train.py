"""Train the Titanic MLP: the one entry for a laptop, a GPU, torchrun and SageMaker.

Run: `python -m entry.train [--help]`. With no arguments on a fresh clone it prepares `./data/`
from the Titanic CSV, trains with early stopping, evaluates the best weights on val and test, and
writes `model/model.pt`, `model/metrics.json` and `outputs/` (logs, curves.png).
The lesson's command works unchanged: `--train F --val F --epochs N --learning_rate LR`.
The run itself is `titanic_lightning.training.train`.
"""

import time

from titanic_lightning.command import run_command


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    from titanic_lightning.config import parse_train_args

    cfg = parse_train_args(argv)
    # torch and Lightning load only from here on (after the layout): --help and argument errors stay instant.
    from titanic_lightning.training import train

    train(cfg, started)


if __name__ == "__main__":
    run_command(main)

"""Train the Titanic MLP: the one entry for a laptop, a GPU, torchrun and SageMaker.

Run: `python -m entry.train [--help]`. With no arguments on a fresh clone it prepares `./data/`
from the Titanic CSV, trains with early stopping, evaluates the best weights on val and test, and
writes `model/model.pt`, `model/metrics.json` and `outputs/` (logs, curves.png).
The lesson's command works unchanged: `--train F --val F --epochs N --learning_rate LR`.
The run itself is `titanic_lightning.training.train`.

The last line on standard output gives the run's times, as the lesson's notebook prints its
"Local training time": `training time: 12.31 s (fit), whole process 17.92 s` — the seconds in
Lightning's fit loop, and the seconds of the whole command (imports, data, evaluation, saving).
Only global rank 0 prints it; it holds no `name=value;` pair, so no metric regex reads it.
"""

import time
from contextlib import ExitStack

from titanic_lightning.command import run_command


def timing_line(fit_seconds: float | None, whole_seconds: float) -> str:
    fit = "-" if fit_seconds is None else f"{fit_seconds:.2f} s"
    return f"training time: {fit} (fit), whole process {whole_seconds:.2f} s"


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    from titanic_lightning.config import parse_train_args
    from titanic_lightning.training.layout import resolve

    cfg = parse_train_args(argv)
    with ExitStack() as held:
        # The folders are checked and locked before torch and Lightning load: --help, a mistake in a flag
        # or a file, and a folder another command holds are all answered at once.
        layout = resolve(cfg, held)
        from titanic_lightning.training.train import train

        result = train(cfg, started, layout)
    if result.metrics is not None:  # global rank 0
        print(timing_line(result.fit_seconds, time.perf_counter() - started), flush=True)


if __name__ == "__main__":
    run_command(main)

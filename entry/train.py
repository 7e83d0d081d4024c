"""Train the Titanic MLP: the one entry for a laptop, a GPU, torchrun and SageMaker.

Run: `python -m entry.train [--help]`. With no arguments on a fresh clone it prepares `./data/`
from the Titanic CSV, trains with early stopping, evaluates the best weights on val and test, and
writes `model/model.pt`, `model/metrics.json` and `outputs/` (logs, curves.png).
The lesson's command works unchanged: `--train F --val F --epochs N --learning_rate LR`.
"""

import time

from titanic_lightning.command import run_command


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    from titanic_lightning import environment, layout
    from titanic_lightning.config import parse_train_args

    cfg = parse_train_args(argv)
    paths = layout.resolve(cfg)

    # torch and Lightning load only from here on: --help and argument errors stay instant.
    from titanic_lightning import trainer as run

    plan = environment.plan_from_environment(
        run.cuda_devices(), accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, cpu_processes=cfg.cpu_processes,
        process_group_timeout_s=cfg.process_group_timeout,
    )
    environment.apply_plan_environment(plan)
    datamodule, model, trainer = run.fit(cfg, paths, plan)
    scores = run.evaluate(trainer, model, datamodule)
    run.finish(trainer, model, paths, plan, scores, started)


if __name__ == "__main__":
    run_command(main)

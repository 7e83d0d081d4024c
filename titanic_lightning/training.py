"""One training run as a function: `train(cfg)` resolves where the run reads and writes, plans the
processes, fits, evaluates the best weights, saves the artifacts, and returns a `TrainResult`.

`python -m entry.train` is this function behind a command line; `bench.accuracy` calls it directly.
This module imports neither torch nor Lightning until `train` runs, and `train` imports them only
after the layout is resolved: a missing channel or an unwritable folder is reported at once.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from titanic_lightning.config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    On global rank 0, `metrics` is what metrics.json holds. The paths name the files the run saved;
    they are None where nothing was saved: on every other rank, and under --fast_dev_run (whose
    metrics rank 0 still returns).
    """

    metrics: dict | None
    model_dir: Path | None = None
    model_file: Path | None = None
    metrics_file: Path | None = None
    output_dir: Path | None = None
    curves: Path | None = None
    wall_seconds: float | None = None  # the whole run, from `started`
    fit_seconds: float | None = None  # this process's time in Lightning's fit loop (rank 0)


def train(cfg: TrainConfig, started: float | None = None) -> TrainResult:
    """Run the training `cfg` describes; `started` is the `time.perf_counter()` reading the run's
    wall time counts from (default: now). Raises `UsageError` for a mistake in `cfg` or its files."""
    started = time.perf_counter() if started is None else started
    from titanic_lightning.layout import resolve

    with ExitStack() as held:  # the folders the run writes and reads, locked until it ends
        layout = resolve(cfg, held)  # where the run reads and writes
        return _train(cfg, layout, started)


def _train(cfg: TrainConfig, layout, started: float) -> TrainResult:
    # torch and Lightning load only from here on.
    from titanic_lightning import environment, lightning_run
    from titanic_lightning.cluster import make_plan

    plan = make_plan(
        lightning_run.cuda_devices(), accelerator=cfg.accelerator, devices=cfg.devices,
        num_nodes=cfg.num_nodes, strategy=cfg.strategy, cpu_processes=cfg.cpu_processes,
        process_group_timeout_s=cfg.process_group_timeout, tensor_parallel_size=cfg.tensor_parallel_size,
    )
    if plan.tensor_parallel_size is not None:
        from titanic_lightning.parallel import check_widths

        check_widths(cfg.hidden_sizes, plan.tensor_parallel_size)
    environment.export_defaults(plan.env_updates)
    try:
        datamodule, model, trainer = lightning_run.fit(cfg, layout, plan)
        scores = lightning_run.evaluate(trainer, model, datamodule)
        return lightning_run.finish(trainer, model, layout, plan, scores, started)
    finally:
        lightning_run.end_process_group()

"""One training run, read top to bottom: `train(cfg)` resolves where the run reads and writes
(`layout`), plans the processes (`cluster`), builds the DataModule, the LightningModule and the
Trainer (`build`), fits, evaluates the best epoch's weights on val and test, and saves the artifacts.

    from titanic_lightning.config import parse_train_args
    from titanic_lightning.training.train import train

    result = train(parse_train_args(["--epochs", "50"]))   # what `python -m entry.train --epochs 50` runs
    result.metrics["test_acc"], result.model_file

Global rank 0 prints the `name=value;` lines described in `titanic_lightning.training.callbacks`
and writes the files; every other rank returns a result without metrics.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from titanic_lightning import environment
from titanic_lightning.command import stops_deferred
from titanic_lightning.config import TrainConfig
from titanic_lightning.contracts import CURVES_FILE, FINAL_LINE, FINAL_METRICS, METRICS_FILE, MODEL_FILE
from titanic_lightning.data.datamodule import TitanicDataModule, data_parallel_rank
from titanic_lightning.errors import Terminated, UsageError
from titanic_lightning.io.artifacts import plot_curves, write_model_dir
from titanic_lightning.model.module import TitanicClassifier
from titanic_lightning.model.parallel import check_widths, full_state_dict
from titanic_lightning.training import checkpoints
from titanic_lightning.training.callbacks import (
    BestWeights,
    MetricPrinter,
    StopWhenNoted,
    find_callback,
    fit_seconds,
    metric_line,
)
from titanic_lightning.training.cluster import Plan, make_plan
from titanic_lightning.training.layout import CSV_LOGS, TENSORBOARD_LOGS, Layout, resolve
from titanic_lightning.training.strategies import build_strategy

# What Lightning says on every run that a user of this entry cannot act on (`--debug` shows it all):
QUIET_WARNINGS = (
    r".*does not have many workers.*",  # the data sits in memory: worker processes would only copy it
    # Epoch values are reduced over ranks by torchmetrics before they are logged; sync_dist=True
    # would average them a second time.
    r".*sync_dist=True.*",
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning 2.6's own use of an API torch deprecated
    # The folders are the run's own (`layout`): its logs and last.ckpt are meant to be replaced.
    r".*exists and is not empty.*",
    r".*dirpath has changed.*",
    # A resumed run may change its checkpoint flags: the state it needs (history, best weights,
    # position) is held by the callbacks every run carries.
    r".*callbacks used to create the checkpoint need to be provided.*",
)


def quiet_lightning(debug: bool) -> None:
    """Leave a run's output to its own lines (process, epochs, final, saved): Lightning's notes
    (GPU/TPU available, distributed banners, why fit stopped) go, and so do its warnings above,
    and its hint to use `srun` outside a SLURM job. Warnings are filtered per run, not per import:
    pytest restores the filters after each test."""
    if debug:
        return
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if not os.environ.get("SLURM_JOB_ID"):
        warnings.filterwarnings("ignore", message=r".*`srun` command is available.*")
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


def train(cfg: TrainConfig, started: float | None = None, layout: Layout | None = None) -> TrainResult:
    """Run the training `cfg` describes; `started` is the `time.perf_counter()` reading the run's
    wall time counts from (default: now); `layout` the folders already resolved and held by the
    caller (default: resolved and held here). Raises `UsageError` for a mistake in `cfg` or its files."""
    started = time.perf_counter() if started is None else started
    quiet_lightning(cfg.debug)
    with ExitStack() as held:  # the folders the run writes and reads, locked until it ends
        layout = layout or resolve(cfg, held)
        plan = make_plan(
            cuda_devices(), accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
            strategy=cfg.strategy, cpu_processes=cfg.cpu_processes, process_group_timeout_s=cfg.process_group_timeout,
            tensor_parallel_size=cfg.tensor_parallel_size,
        )
        if plan.tensor_parallel_size is not None:
            check_widths(cfg.hidden_sizes, plan.tensor_parallel_size)
        environment.export_defaults(plan.env_updates)
        try:
            datamodule, model, trainer = fit(cfg, layout, plan)
            scores = evaluate(trainer, model, datamodule)
            return finish(trainer, model, layout, plan, scores, started)
        finally:
            end_process_group()


def build(cfg: TrainConfig, layout: Layout, plan: Plan):
    """Return (datamodule, model, trainer) for this configuration, layout and plan."""
    datamodule = TitanicDataModule(layout.train, layout.val, layout.test, batch_size=cfg.batch_size, seed=cfg.seed)
    input_size = datamodule.num_features
    if layout.preprocessing is not None and len(layout.preprocessing["feature_names"]) != input_size:
        raise UsageError(
            f"{layout.train}: {input_size} features, but its preprocessing describes "
            f"{len(layout.preprocessing['feature_names'])}; pass the matching --preprocessing"
        )
    # Load and check the data now, before the Trainer writes anything: bad data leaves no files.
    datamodule.setup("fit")
    model = TitanicClassifier(
        input_size=input_size, hidden_sizes=list(cfg.hidden_sizes), dropout=cfg.dropout,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
        feature_names=layout.preprocessing["feature_names"] if layout.preprocessing else None,
    )
    output_dir = layout.output_dir
    callbacks: list[Callback] = [
        StopWhenNoted(), MetricPrinter(plan), BestWeights(), Timer(),
    ]
    if layout.checkpoint_dir is not None:
        callbacks += checkpoints.checkpoint_callbacks(layout.checkpoint_dir, cfg.checkpoint_every_n_epochs,
                                                 cfg.checkpoint_every_n_seconds)
    if cfg.early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience))
    trainer = pl.Trainer(
        accelerator=plan.accelerator,
        devices=plan.devices,
        num_nodes=plan.num_nodes,
        strategy=build_strategy(plan),
        max_epochs=cfg.epochs,
        callbacks=callbacks,
        logger=[
            CSVLogger(output_dir, name=CSV_LOGS, version=""),
            TensorBoardLogger(output_dir, name=TENSORBOARD_LOGS, version="", default_hp_metric=False),
        ],
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule shards by rank itself
        enable_checkpointing=layout.checkpoint_dir is not None,
        fast_dev_run=cfg.fast_dev_run,  # Lightning then saves no checkpoint and logs nothing
        plugins=[plan.cluster, checkpoints.SameFolderCheckpointIO()],
        enable_progress_bar=sys.stdout.isatty(),
        enable_model_summary=False,
        default_root_dir=output_dir,
    )
    return datamodule, model, trainer


def fit(cfg: TrainConfig, layout: Layout, plan: Plan):
    """Seed, build and fit, continuing from `last.ckpt` when the checkpoint directory has one.

    Returns (datamodule, model, trainer).
    """
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, model, trainer = build(cfg, layout, plan)
    checkpoint = None if cfg.fast_dev_run else checkpoints.checkpoint_to_resume(
        layout.checkpoint_dir, model, datamodule, plan.data_parallel_size)
    where = (f"the last checkpoint is in {layout.checkpoint_dir}: run the same command again to resume from it"
             if layout.checkpoint_dir is not None else "no --checkpoint_dir was given, so nothing was kept to resume from")
    try:
        with stops_deferred() as stop:
            trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except SIGTERMException:
        raise Terminated(f"stopped by SIGTERM; {where}") from None
    if stop.interrupted:  # noted after the last batch started
        raise KeyboardInterrupt
    if trainer.received_sigterm or stop.received:
        # Lightning stops only between batches, and its handler is in place only for part of fit:
        # a SIGTERM at the end is noted, then dropped when fit returns. The run is saved by then.
        raise Terminated(f"stopped by SIGTERM; {where}")
    return datamodule, model, trainer


def evaluate(trainer: pl.Trainer, model: TitanicClassifier, datamodule: TitanicDataModule) -> dict:
    """Validate (and test, when there is a test split) the best epoch's weights."""
    find_callback(trainer, BestWeights).restore(model)
    results = dict(trainer.validate(model, datamodule=datamodule, verbose=False)[0])
    if datamodule.paths["test"] is not None:
        results.update(trainer.test(model, datamodule=datamodule, verbose=False)[0])
    return {k: float(results[k]) for k in FINAL_METRICS if k in results}


def finish(trainer: pl.Trainer, model: TitanicClassifier, layout: Layout, plan: Plan, scores: dict,
           started: float) -> TrainResult:
    """On global rank 0: write model.pt, metrics.json and curves.png, print the summary line."""
    # Every rank takes part: under tensor parallelism the whole weights are gathered from the shards.
    weights = full_state_dict(model.net)
    if not trainer.is_global_zero:
        return TrainResult(metrics=None, wall_seconds=round(time.perf_counter() - started, 3))
    best = find_callback(trainer, BestWeights)
    own_seconds, total_seconds = fit_seconds(find_callback(trainer, Timer))
    # Every data-parallel rank trains as many rows as rank 0 (shards are padded), and the ranks of a
    # tensor-parallel group the same ones: the rows of this run.
    rows_trained = trainer.datamodule.rows_trained * data_parallel_rank(trainer)[1]
    metrics = {
        # AUROC on a split of one class is undefined: null here, nan in the printed line.
        **{k: None if math.isnan(v) else v for k, v in scores.items()},
        "best_epoch": best.best_epoch,
        "epochs_run": trainer.current_epoch,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "fit_seconds": round(own_seconds, 3),
        "fit_seconds_total": round(total_seconds, 3),
        "train_rows_per_second": round(rows_trained / own_seconds) if rows_trained and own_seconds > 0 else None,
        "accelerator": plan.accelerator,
        "devices": plan.devices,
        "num_nodes": plan.num_nodes,
        "world_size": trainer.world_size,
        "strategy": plan.strategy,
        **({"tensor_parallel_size": plan.tensor_parallel_size} if plan.tensor_parallel_size else {}),
    }
    timings = {"wall_seconds": metrics["wall_seconds"], "fit_seconds": metrics["fit_seconds"]}
    payload = {
        "state_dict": {k: v.cpu() for k, v in weights.items()},
        "hyperparameters": dict(model.hparams),
        "preprocessing": layout.preprocessing,
    }
    if trainer.fast_dev_run:
        print(metric_line({**metrics, **scores}, FINAL_LINE, prefix="final: "), flush=True)
        print("fast_dev_run: the whole entry ran on a few batches; nothing was saved", file=sys.stderr, flush=True)
        return TrainResult(metrics=metrics, **timings)
    write_model_dir(layout.model_dir, payload, metrics)
    curves = plot_curves(find_callback(trainer, MetricPrinter).history, layout.output_dir, CURVES_FILE,
                         best.best_epoch)
    print(metric_line({**metrics, **scores}, FINAL_LINE, prefix="final: "), flush=True)
    print(f"saved {layout.model_dir / MODEL_FILE} and {METRICS_FILE}; logs and {CURVES_FILE} in {layout.output_dir}",
          file=sys.stderr, flush=True)
    return TrainResult(metrics=metrics, model_dir=layout.model_dir, model_file=layout.model_dir / MODEL_FILE,
                       metrics_file=layout.model_dir / METRICS_FILE, output_dir=layout.output_dir, curves=curves,
                       **timings)


def end_process_group() -> None:
    """Close this process's process group, if it has one. Left open, gloo's threads are still
    running when the interpreter exits, and a process can abort then (SIGABRT, "terminate called
    without an active exception"), failing a job whose work was done."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0

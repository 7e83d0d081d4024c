"""Builds the run — DataModule, LightningModule, Trainer — and turns its results into artifacts.

Metric lines, printed by global rank 0 (the `name=value;` form SageMaker metric regexes read):

    epoch=12; train_loss=0.4411; val_loss=0.4213; val_acc=0.8182; val_auroc=0.8712; val_f1=0.7547;
    final: best_epoch=12; epochs_run=32; val_loss=0.4213; val_acc=0.8182; ...; test_acc=0.8268;
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from typing import TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from titanic_lightning import resume
from titanic_lightning.artifacts import plot_curves, write_model_dir
from titanic_lightning.config import TrainConfig
from titanic_lightning.data import TitanicDataModule
from titanic_lightning.environment import Plan
from titanic_lightning.errors import UsageError
from titanic_lightning.layout import CSV_LOGS, CURVES_FILE, TENSORBOARD_LOGS, Layout
from titanic_lightning.model import TitanicClassifier
from titanic_lightning.strategies import build_strategy

CallbackT = TypeVar("CallbackT", bound=Callback)

EPOCH_KEYS = ("train_loss", "val_loss", "val_acc", "val_auroc", "val_f1")
FINAL_KEYS = ("val_loss", "val_acc", "val_auroc", "val_f1", "test_loss", "test_acc", "test_auroc", "test_f1")

# Data already sits in memory: worker processes would only copy it. Lightning's hint says otherwise.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Epoch values are reduced over ranks by torchmetrics before they are logged; Lightning's advice to
# add sync_dist=True would average them a second time.
warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
# Lightning 2.6's own use of a torch API that torch deprecated: nothing a user of this project can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's tip to install its hosted logger from every run's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisement())


def metric_line(values: dict, keys=None, prefix: str = "") -> str:
    items = [(k, values[k]) for k in (keys or values) if k in values]
    text = " ".join(f"{k}={v:.4f};" if isinstance(v, float) else f"{k}={v};" for k, v in items)
    return f"{prefix}{text}"


class MetricPrinter(Callback):
    """One `name=value;` line per validated epoch, from global rank 0.

    The values are kept as the run's history, which travels in last.ckpt: curves.png shows every
    epoch of a run that was stopped and resumed, where a restarted job's logs hold only its own.
    """

    def __init__(self):
        self.history: list[dict] = []

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch + 1,
               **{k: float(v) for k, v in trainer.callback_metrics.items() if k in EPOCH_KEYS}}
        self.history.append(row)
        if trainer.is_global_zero:
            print(metric_line(row, ("epoch", *EPOCH_KEYS)), flush=True)

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state_dict):
        self.history = list(state_dict["history"])


class BestWeights(Callback):
    """Keeps the weights of the epoch with the lowest val_loss, in memory, on every rank.

    Under DDP every rank holds the same weights, so each can restore the best ones by itself after
    fit: no rank reads a file another host wrote (SageMaker hosts share no file system). The
    weights travel inside last.ckpt, so a resumed run still knows its best epoch.
    """

    def __init__(self):
        self.best_loss = math.inf
        self.best_epoch: int | None = None  # 1-based
        self.weights: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val_loss")
        if trainer.sanity_checking or loss is None or not float(loss) < self.best_loss:
            return
        self.best_loss, self.best_epoch = float(loss), trainer.current_epoch + 1
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def restore(self, pl_module) -> None:
        if self.weights is not None:
            pl_module.load_state_dict(self.weights)

    def state_dict(self):
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "weights": self.weights}

    def load_state_dict(self, state_dict):
        self.best_loss, self.best_epoch, self.weights = (
            state_dict["best_loss"], state_dict["best_epoch"], state_dict["weights"])


class TrainedRows(Callback):
    """Counts the rows this process trained on; not saved in checkpoints, so a resumed run counts
    only its own batches (the training loader pads every rank's shard to the same length)."""

    def __init__(self):
        self.rows = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows += len(batch[1])


def fit_seconds(timer: Timer) -> tuple[float, float]:
    """(this process's training seconds, training seconds including the runs it resumed).

    Lightning's Timer saves its elapsed time in checkpoints and adds it back on a resume.
    """
    start, end = timer.start_time("train"), timer.end_time("train")
    own = end - start if start is not None and end is not None else 0.0  # nothing left to train
    return own, timer.time_elapsed("train")


class DataOnDevice(Callback):
    """Moves the in-memory tensors to the training device once, so batches are cut there."""

    def on_fit_start(self, trainer, pl_module):
        trainer.datamodule.to(pl_module.device)

    on_validation_start = on_test_start = on_fit_start


class AnnouncePlan(Callback):
    """One line per process at the start of fit: where it sits in the job and how it trains."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def setup(self, trainer, pl_module, stage):
        if stage != "fit":
            return
        strategy = trainer.strategy
        print(
            f"process: world_size={trainer.world_size}; global_rank={trainer.global_rank}; "
            f"local_rank={trainer.local_rank}; node_rank={trainer.node_rank}; launcher={self.plan.launcher}; "
            f"accelerator={self.plan.accelerator}; devices={self.plan.devices}; num_nodes={self.plan.num_nodes}; "
            f"strategy={self.plan.strategy} ({type(strategy).__name__}); "
            f"backend={getattr(strategy, '_process_group_backend', None) or 'none'};",
            file=sys.stderr, flush=True,
        )


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
    callbacks: list[Callback] = [AnnouncePlan(plan), MetricPrinter(), BestWeights(), DataOnDevice(), Timer(),
                                 TrainedRows()]
    if layout.checkpoint_dir is not None:
        callbacks += resume.checkpoint_callbacks(layout.checkpoint_dir, cfg.checkpoint_every_n_epochs,
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
        plugins=[resume.SameFolderCheckpointIO()],
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
    checkpoint = None if cfg.fast_dev_run else resume.checkpoint_to_resume(
        layout.checkpoint_dir, model, datamodule, trainer.world_size)
    trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    return datamodule, model, trainer


def callback(trainer: pl.Trainer, kind: type[CallbackT]) -> CallbackT:
    """The trainer's callback of this type (build() adds one of each it uses)."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, kind))


def evaluate(trainer: pl.Trainer, model: TitanicClassifier, datamodule: TitanicDataModule) -> dict:
    """Validate (and test, when there is a test split) the best epoch's weights."""
    callback(trainer, BestWeights).restore(model)
    results = dict(trainer.validate(model, datamodule=datamodule, verbose=False)[0])
    if datamodule.paths["test"] is not None:
        results.update(trainer.test(model, datamodule=datamodule, verbose=False)[0])
    return {k: float(results[k]) for k in FINAL_KEYS if k in results}


def finish(trainer: pl.Trainer, model: TitanicClassifier, layout: Layout, plan: Plan, scores: dict,
           started: float) -> dict | None:
    """On global rank 0: write model.pt, metrics.json and curves.png, print the summary line."""
    if not trainer.is_global_zero:
        return None
    best = callback(trainer, BestWeights)
    own_seconds, total_seconds = fit_seconds(callback(trainer, Timer))
    # Every rank trains as many rows as rank 0 (shards are padded): the rows of this run, all ranks.
    rows_trained = callback(trainer, TrainedRows).rows * trainer.world_size
    metrics = {
        **scores,
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
    }
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "hyperparameters": dict(model.hparams),
        "preprocessing": layout.preprocessing,
    }
    if trainer.fast_dev_run:
        print(metric_line(metrics, ("best_epoch", "epochs_run", *FINAL_KEYS), prefix="final: "), flush=True)
        print("fast_dev_run: the whole entry ran on a few batches; nothing was saved", file=sys.stderr, flush=True)
        return metrics
    write_model_dir(layout.model_dir, payload, metrics)
    plot_curves(callback(trainer, MetricPrinter).history, layout.output_dir / CURVES_FILE, best.best_epoch)
    print(metric_line(metrics, ("best_epoch", "epochs_run", *FINAL_KEYS), prefix="final: "), flush=True)
    print(f"saved {layout.model_dir / 'model.pt'} and metrics.json; logs and {CURVES_FILE} in {layout.output_dir}",
          file=sys.stderr, flush=True)
    return metrics


def cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0

"""The callbacks every training run carries, and the `name=value;` metric lines they print.

Metric lines, printed by global rank 0 (the `name=value;` form SageMaker metric regexes read):

    epoch=12; train_loss=0.4411; val_loss=0.4213; val_acc=0.8182; val_auroc=0.8712; val_f1=0.7547;
    final: best_epoch=12; epochs_run=32; val_loss=0.4213; val_acc=0.8182; ...; test_acc=0.8268;
"""

from __future__ import annotations

import math
import sys
from typing import TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, Timer

from titanic_lightning.cluster import Plan
from titanic_lightning.contracts import EPOCH_LINE, EPOCH_METRICS
from titanic_lightning.parallel import full_state_dict, load_full_state_dict

CallbackT = TypeVar("CallbackT", bound=Callback)

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
               **{k: float(v) for k, v in trainer.callback_metrics.items() if k in EPOCH_METRICS}}
        self.history.append(row)
        if trainer.is_global_zero:
            print(metric_line(row, EPOCH_LINE), flush=True)

    def state_dict(self):
        return {"history": self.history}

    def load_state_dict(self, state_dict):
        self.history = list(state_dict["history"])


class BestWeights(Callback):
    """Keeps the weights of the epoch with the lowest val_loss, in memory, on every rank.

    Under DDP every rank holds the same weights, so each can restore the best ones by itself after
    fit: no rank reads a file another host wrote (SageMaker hosts share no file system). Under
    tensor parallelism each rank keeps the whole weights too (gathered from the shards) and loads
    back its shard. The weights travel inside last.ckpt, so a resumed run still knows its best epoch.
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
        self.weights = full_state_dict(pl_module)

    def restore(self, pl_module) -> None:
        if self.weights is not None:
            load_full_state_dict(pl_module, self.weights)

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




# Lightning's callback hooks: every public method of Callback but its state and checkpoint ones.
_HOOKS = tuple(name for name, fn in vars(Callback).items() if callable(fn) and not name.startswith("_")
               and name not in ("state_dict", "load_state_dict", "on_save_checkpoint", "on_load_checkpoint"))


def _calling_each(methods):
    def hook(*args, **kwargs):
        for method in methods:
            method(*args, **kwargs)
    return hook


class Bundle(Callback):
    """Several stateless callbacks as one entry in the Trainer's list.

    Lightning calls every callback on each of its hooks (about fifteen per training epoch), whether
    the callback implements that hook or not, each call inside its profiler's context: on small data
    that costs more than the callbacks' own work. A bundle takes one such call per hook and calls
    each part only on the hooks its class overrides, in the order given.
    """

    def __init__(self, *parts: Callback):
        for part in parts:
            if any(getattr(type(part), name) is not getattr(Callback, name)
                   for name in ("state_dict", "load_state_dict", "on_save_checkpoint", "on_load_checkpoint")):
                raise TypeError(f"{type(part).__name__} keeps state in checkpoints: it cannot be bundled")
        self.parts = parts
        for name in _HOOKS:
            methods = [getattr(part, name) for part in parts if getattr(type(part), name) is not getattr(Callback, name)]
            if methods:
                setattr(self, name, _calling_each(methods))


def find_callback(trainer: pl.Trainer, kind: type[CallbackT]) -> CallbackT:
    """The trainer's callback of this type, bundled or not (a run carries one of each it uses)."""
    return next(part for cb in trainer.callbacks for part in (cb.parts if isinstance(cb, Bundle) else (cb,))
                if isinstance(part, kind))


class StopWhenNoted(Callback):
    """A SIGTERM that arrived while Lightning's own handler was not yet in place (fit's set-up) stops
    training at the next batch, as Lightning's would: the checkpoint is saved and the run ends."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from titanic_lightning.command import stop_noted

        if stop_noted() and not trainer.received_sigterm:
            raise SIGTERMException

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

from titanic_lightning.contracts import EPOCH_LINE, EPOCH_METRICS
from titanic_lightning.model.parallel import full_state_dict, load_full_state_dict
from titanic_lightning.training.cluster import Plan

CallbackT = TypeVar("CallbackT", bound=Callback)


def metric_line(values: dict, keys=None, prefix: str = "") -> str:
    items = [(k, values[k]) for k in (keys or values) if k in values]
    text = " ".join(f"{k}={v:.4f};" if isinstance(v, float) else f"{k}={v};" for k, v in items)
    return f"{prefix}{text}"


class MetricPrinter(Callback):
    """The lines a run prints: one `process:` line per process at the start of fit (stderr: where it
    sits in the job and how it trains), and one `name=value;` line per training epoch from global
    rank 0, once the epoch's training loss and validation metrics are logged.

    The epochs' values are kept as the run's history, which travels in last.ckpt: curves.png shows
    every epoch of a run that was stopped and resumed, where a restarted job's logs hold only its own.
    """

    def __init__(self, plan: Plan | None = None):
        self.plan = plan
        self.history: list[dict] = []

    def setup(self, trainer, pl_module, stage):
        if stage != "fit" or self.plan is None:
            return
        plan, strategy = self.plan, trainer.strategy
        # One write, newline included: the processes share stderr, and print's two writes interleave.
        sys.stderr.write(
            f"process: world_size={trainer.world_size}; global_rank={trainer.global_rank}; "
            f"local_rank={trainer.local_rank}; node_rank={trainer.node_rank}; launcher={plan.launcher}; "
            f"accelerator={plan.accelerator}; devices={plan.devices}; num_nodes={plan.num_nodes}; "
            f"strategy={plan.strategy} ({type(strategy).__name__}); "
            f"backend={getattr(strategy, 'process_group_backend', None) or 'none'};\n"
        )
        sys.stderr.flush()

    def on_train_epoch_end(self, trainer, pl_module):
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


def fit_seconds(timer: Timer) -> tuple[float, float]:
    """(this process's training seconds, training seconds including the runs it resumed).

    Lightning's Timer saves its elapsed time in checkpoints and adds it back on a resume.
    """
    start, end = timer.start_time("train"), timer.end_time("train")
    own = end - start if start is not None and end is not None else 0.0  # nothing left to train
    return own, timer.time_elapsed("train")


def find_callback(trainer: pl.Trainer, kind: type[CallbackT]) -> CallbackT:
    """The trainer's callback of this type (a run carries one of each it uses)."""
    return next(cb for cb in trainer.callbacks if isinstance(cb, kind))


class StopWhenNoted(Callback):
    """Stops training at the next batch boundary, as Lightning's SIGTERM handling does (the checkpoint
    is saved and the run ends), for what Lightning does not see itself: a SIGTERM that arrived while
    its handler was not yet in place (fit's set-up), SLURM's SIGUSR1 warning before the time limit,
    and Ctrl-C, raised here as the KeyboardInterrupt Lightning shuts down on (see `command.stops_deferred`).

    With several processes, Lightning's own SIGTERM handler is replaced: it broadcasts from inside
    the handler, wherever each rank was interrupted, so that collective pairs with another one and
    the job hangs until the process-group timeout. The command's handler only notes the signal, and
    the ranks agree at each batch start (one small all-reduce) to stop together, whichever got it.
    """

    def _take_back_sigterm(self, trainer) -> None:
        from titanic_lightning import command

        if trainer.world_size > 1:
            command.take_back_sigterm()

    def on_train_start(self, trainer, pl_module):
        self._take_back_sigterm(trainer)

    def on_validation_start(self, trainer, pl_module):
        self._take_back_sigterm(trainer)

    def on_test_start(self, trainer, pl_module):
        self._take_back_sigterm(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from titanic_lightning import command

        interrupted = command.interrupt_noted()
        stop = interrupted or (command.stop_noted() and not trainer.received_sigterm)
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise KeyboardInterrupt if interrupted else SIGTERMException
        if command.requeue_watched() and trainer.strategy.reduce_boolean_decision(command.requeue_asked(), all=False):
            command.ask_requeue()  # the ranks that did not get the signal requeue too (rank 0 asks SLURM)
            raise SIGTERMException

"""Checkpoints that let a stopped run continue exactly: writing `last.ckpt`, and resuming from it.

SageMaker restores /opt/ml/checkpoints on every instance when a spot job restarts; the same
command then continues where the last checkpoint left off instead of starting over. `last.ckpt`
is written at epoch ends, optionally every N seconds inside long epochs (the training loader's
position is part of the checkpoint, so the resumed epoch continues with the batches it had not
trained on), and once more when SIGTERM stops the run. Each one is written to a temporary file
in the same folder and renamed into place, so a kill at any moment leaves the previous or the new
`last.ckpt`, never a truncated one.

A checkpoint continues only the run it came from: the same settings, the same number of processes
for a mid-epoch save, and the same training data (its sha256 is saved with the DataModule's
hyperparameters).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from titanic_lightning import environment
from titanic_lightning.contracts import CHECKPOINT_FILE
from titanic_lightning.data.datamodule import DATA_SHA256
from titanic_lightning.errors import UsageError
from titanic_lightning.io.atomic import atomic_output, remove_stale_partials

LAST = Path(CHECKPOINT_FILE).stem  # ModelCheckpoint takes the name without ".ckpt"


class TimedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint's timed save (`train_time_interval`), except after an epoch's last batch: the
    epoch's validation and end follow it, and Lightning resumes a save taken there as a finished
    epoch, without them. The epoch-end checkpoint comes a moment later."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 < trainer.num_training_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class SameFolderCheckpointIO(TorchCheckpointIO):
    """Saves a checkpoint to a temporary file beside its target, then renames it over the target.

    Lightning's own save stages the file in the system temp folder and moves it into place. Across
    file systems (a container's /tmp and the /opt/ml volume) that move is a copy over the old file,
    and a kill during it leaves a truncated `last.ckpt`; a rename within one folder is atomic.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as partial:
            torch.save(checkpoint, partial)


def checkpoint_callbacks(dirpath: Path, every_n_epochs: int, every_n_seconds: float | None) -> list[ModelCheckpoint]:
    """Lightning's ModelCheckpoint writing `dirpath/last.ckpt` every N epochs and when training stops
    on an exception after a step (SIGTERM makes Lightning raise one between two batches, where the
    state is consistent), plus every N seconds during training when asked for."""
    options = {"dirpath": dirpath, "filename": LAST, "save_top_k": 1, "enable_version_counter": False}
    callbacks = [ModelCheckpoint(every_n_epochs=every_n_epochs, save_on_exception=True, **options)]
    if every_n_seconds:
        callbacks.append(TimedCheckpoint(train_time_interval=timedelta(seconds=every_n_seconds), **options))
    return callbacks


def checkpoint_to_resume(checkpoint_dir: Path | None, model, datamodule, world_size: int = 1) -> Path | None:
    """`checkpoint_dir/last.ckpt` when it exists and matches this run; None to start afresh."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    # A process killed while writing leaves its partial file beside last.ckpt.
    remove_stale_partials(Path(checkpoint_dir))
    if not path.is_file():
        return None
    checkpoint = read_checkpoint(path)
    # Continuing on other data would mix two trainings into one model.
    saved_data, data = (checkpoint.get("datamodule_hyper_parameters") or {}).get(DATA_SHA256), datamodule.hparams[DATA_SHA256]
    if saved_data is None:
        raise UsageError(
            f"{path}: records no training data identity (written by an older version), so it cannot be resumed "
            "safely; remove it or choose another --checkpoint_dir to train afresh"
        )
    if saved_data != data:
        raise UsageError(
            f"{path}: the training data differs from the data this checkpoint was trained on (train and val "
            f"sha256 {saved_data[:12]}, this run {data[:12]}); resume with the same data, or choose another "
            "--checkpoint_dir to train afresh"
        )
    for section, current in (("hyper_parameters", model.hparams), ("datamodule_hyper_parameters", datamodule.hparams)):
        saved = checkpoint.get(section) or {}
        for key, value in current.items():
            was, now = _tuples_as_lists(saved.get(key)), _tuples_as_lists(value)
            if was != now:
                raise UsageError(
                    f"{path} was written with {key}={was!r} but this run has {key}={now!r}; "
                    "resume with the same settings, or choose another --checkpoint_dir"
                )
    check_restorable(path, checkpoint, model)
    epochs, batches, saved_world_size = position(checkpoint)
    if batches and saved_world_size not in (None, world_size):
        # Each process's share of an epoch depends on how many there are: the batches still to
        # train cannot be found again.
        raise UsageError(
            f"{path} was saved inside epoch {epochs + 1} by {saved_world_size} process(es) and this run has "
            f"{world_size}; resume with {saved_world_size}, or remove it to start afresh"
        )
    if environment.is_global_zero():  # said once, not once per process
        print(f"resuming from {path}: {describe(checkpoint)}", file=sys.stderr, flush=True)
    return path


# What Lightning reads back from every checkpoint it resumes, and what this project's modules save.
CHECKPOINT_KEYS = {"pytorch-lightning_version": str, "epoch": int, "global_step": int, "state_dict": dict,
                   "loops": dict, "optimizer_states": list, "lr_schedulers": list, "hyper_parameters": dict,
                   "datamodule_hyper_parameters": dict}


def read_checkpoint(path: Path) -> dict:
    """Load `path` (weights only) and check that it is a Lightning checkpoint written by this project."""
    advice = "remove it or choose another --checkpoint_dir"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - on arbitrary bytes torch.load raises almost any type
        # (plain text ends in KeyError from the legacy unpickler, truncated zips in RuntimeError or OSError).
        raise UsageError(
            f"{path}: not a readable checkpoint (truncated or not written by this project: {type(exc).__name__}); "
            f"{advice}"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UsageError(f"{path}: not a training checkpoint (it holds a {type(checkpoint).__name__}); {advice}")
    wrong = [key for key, kind in CHECKPOINT_KEYS.items() if not isinstance(checkpoint.get(key), kind)]
    if wrong:
        raise UsageError(
            f"{path}: not a training checkpoint of this project (missing or malformed: {', '.join(wrong)}); {advice}"
        )
    try:
        position(checkpoint)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        raise UsageError(f"{path}: not a training checkpoint of this project (its loop state is malformed); {advice}") from None
    return checkpoint


def check_restorable(path: Path, checkpoint: dict, model) -> None:
    """What Lightning restores from `checkpoint` fits `model`: the same weights (names, shapes, finite
    values), the fit loop's state and one optimiser's state. Checked here so that a damaged file is
    refused by name before training, not by an error from deep inside Lightning."""
    advice = "remove it or choose another --checkpoint_dir"
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    saved = checkpoint["state_dict"]
    found = {name: tuple(t.shape) if isinstance(t, torch.Tensor) else None for name, t in saved.items()}
    if found != expected:
        differ = sorted(set(found) ^ set(expected)) or sorted(n for n in expected if found[n] != expected[n])
        raise UsageError(f"{path}: its weights do not fit this model (differing: {', '.join(differ[:5])}); {advice}")
    if not all(bool(torch.isfinite(tensor).all()) for tensor in saved.values()):
        raise UsageError(f"{path}: its weights hold NaN or infinite values; {advice}")
    optimizers = checkpoint["optimizer_states"]
    if not isinstance(checkpoint["loops"].get("fit_loop"), dict) or len(optimizers) != 1 or not (
            isinstance(optimizers[0], dict) and isinstance(optimizers[0].get("state"), dict)
            and isinstance(optimizers[0].get("param_groups"), list)):
        raise UsageError(f"{path}: its training loop or optimiser state is missing or malformed; {advice}")


def _loader_state(checkpoint: dict) -> dict:
    loader_states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader") or [{}]
    return loader_states[0]


def position(checkpoint: dict) -> tuple[int, int, int | None]:
    """(epochs done, batches of the next epoch done, processes that trained them) in a checkpoint."""
    state = _loader_state(checkpoint)
    if "epoch" not in state:  # a checkpoint without loader state counts whole epochs only
        return checkpoint.get("epoch", -1) + 1, 0, None
    return state["epoch"], state.get("batches_done", 0), state.get("world_size")


def describe(checkpoint: dict) -> str:
    """How far the checkpointed run got: whole epochs, and batches of the epoch in progress."""
    epochs, batches, _ = position(checkpoint)
    text = f"{epochs} epoch(s) already done"
    return f"{text}, and {batches} batch(es) of epoch {epochs + 1}" if batches else text


def _tuples_as_lists(value):
    """A hyperparameter as it compares across a checkpoint: a saved tuple equals the same list."""
    return list(value) if isinstance(value, tuple) else value

"""Resuming: find `last.ckpt` in the checkpoint directory and check it belongs to this run.

SageMaker restores /opt/ml/checkpoints on every instance when a spot job restarts; the same
command then continues after the last completed epoch instead of starting over. Lightning writes
each checkpoint to a temporary file and renames it into place, so a kill at any moment leaves the
previous or the new `last.ckpt`, never a truncated one.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch

from titanic_lightning.errors import UsageError

LAST = "last"


def checkpoint_to_resume(checkpoint_dir: Path | None, model, datamodule) -> Path | None:
    """`checkpoint_dir/last.ckpt` when it exists and matches this run; None to start afresh."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / f"{LAST}.ckpt"
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise UsageError(
            f"{path}: not a readable checkpoint (truncated or not written by this project: {type(exc).__name__}); "
            "remove it or choose another --checkpoint_dir"
        ) from None
    for section, current in (("hyper_parameters", model.hparams), ("datamodule_hyper_parameters", datamodule.hparams)):
        saved = checkpoint.get(section) or {}
        for key, value in current.items():
            if _plain(saved.get(key)) != _plain(value):
                raise UsageError(
                    f"{path} was written with {key}={_plain(saved.get(key))!r} but this run has {key}={_plain(value)!r}; "
                    "resume with the same settings, or choose another --checkpoint_dir"
                )
    print(f"resuming from {path}: {checkpoint.get('epoch', -1) + 1} epoch(s) already done", file=sys.stderr, flush=True)
    return path


def _plain(value):
    return list(value) if isinstance(value, tuple) else value

"""The model directory: `model.pt`, `metrics.json` and `code/` (the SageMaker serving handler,
see `titanic_lightning.serving`), and the learning-curve picture.

`model.pt` is a plain dictionary that `torch.load(path, weights_only=True)` reads:

    {"format": "titanic-lightning/1",
     "state_dict": {...},          # the MLP's weights (keys as in titanic_lightning.model.MLP)
     "hyperparameters": {...},     # input_size, hidden_sizes, dropout, ...
     "preprocessing": {...},       # preprocessing.json: raw passenger rows → features (or None)
     "metrics": {...}}             # the same numbers as metrics.json

The directory is assembled in a temporary sibling and moved into place, so a failed run never
leaves a `model.pt` without its `metrics.json`, nor files of two runs mixed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

MODEL_FORMAT = "titanic-lightning/1"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"


def write_model_dir(model_dir: Path, payload: dict, metrics: dict) -> None:
    import torch

    from titanic_lightning.serving import write_serving_code

    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    try:
        torch.save({"format": MODEL_FORMAT, **payload, "metrics": metrics}, staging / MODEL_FILE)
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        write_serving_code(staging)
        _swap_in(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.replace(staging, target)
        return
    try:
        # Two renames: the old directory steps aside, the new one takes its name.
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        # A mount point (SageMaker's /opt/ml/model) cannot be renamed: clear it and move files
        # in, metrics.json last, so a model.pt is never newer than the metrics beside it.
        for item in target.iterdir():
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        for name in sorted(os.listdir(staging), key=lambda n: n == METRICS_FILE):
            os.replace(staging / name, target / name)


def load_model_file(path: Path) -> dict:
    """Read a model.pt written by `write_model_dir` (weights only; nothing is unpickled)."""
    import torch

    from titanic_lightning.errors import UsageError

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - on arbitrary bytes torch.load raises almost any type
        # (truncated zips end in OSError, non-zip bytes in IndexError from the legacy unpickler).
        # torch's own text is left out: for pickled objects it advises weights_only=False, which
        # would run whatever code the file holds.
        raise UsageError(f"{path}: not a readable model file (damaged, or not a model.pt written by this project: "
                         f"{type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise UsageError(f"{path}: not a titanic-lightning model (expected format {MODEL_FORMAT})")
    return data


def plot_curves(history: list[dict], out_png: Path, best_epoch: int | None) -> Path | None:
    """Train/val loss and val accuracy per epoch (rows of `epoch`, `train_loss`, ...), best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return None
    epochs = [row["epoch"] for row in history]

    def series(key: str) -> list[float]:
        return [row.get(key, float("nan")) for row in history]

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, series("train_loss"), label="train_loss")
    ax_loss.plot(epochs, series("val_loss"), label="val_loss")
    ax_loss.set(xlabel="epoch", ylabel="BCE loss", title="Loss")
    ax_acc.plot(epochs, series("val_acc"), color="tab:green", label="val_acc")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    if best_epoch is not None:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch {best_epoch}")
    for ax in (ax_loss, ax_acc):
        ax.legend()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png

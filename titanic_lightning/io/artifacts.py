"""The model directory (`model.pt`, `metrics.json`, `code/`: see `titanic_lightning.serving`) and the
learning-curve picture. `model.pt` is a plain dictionary, read with `torch.load(path, weights_only=True)`:
`format`, `state_dict` (the MLP's), `hyperparameters`, `preprocessing` (preprocessing.json, or None)
and `metrics`. `metrics.json` is removed first and written last: when it exists, the `model.pt` beside
it is the one it describes.
"""

from __future__ import annotations

import json
from pathlib import Path

from titanic_lightning.contracts import METRICS_FILE, MODEL_FILE
from titanic_lightning.errors import UsageError
from titanic_lightning.serving import serving_files

MODEL_FORMAT = "titanic-lightning/1"
FLAG = "--model_dir"
ROLE = "train"  # the command that writes the model and output folders (see `outputs`)


def model_dir_files() -> list[str]:
    """Every file the model directory receives, by its name in the directory."""
    return [MODEL_FILE, METRICS_FILE, *serving_files()]


def write_model_dir(model_dir: Path, payload: dict, metrics: dict) -> None:
    import torch

    from titanic_lightning.io.outputs import writing
    from titanic_lightning.serving import write_serving_code

    with writing(Path(model_dir), model_dir_files(), FLAG, ROLE) as files:
        files.remove(METRICS_FILE)
        files.write(MODEL_FILE, lambda tmp: torch.save({"format": MODEL_FORMAT, **payload, "metrics": metrics}, tmp))
        write_serving_code(files)
        files.write_text(METRICS_FILE, json.dumps(metrics, indent=2) + "\n")


def load_model_file(path: Path) -> dict:
    """Read a model.pt written by `write_model_dir` (weights only; nothing is unpickled)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - on arbitrary bytes torch.load raises almost any type
        # torch's own text is left out: for pickled objects it advises weights_only=False, which would
        # run whatever code the file holds.
        raise UsageError(f"{path}: not a readable model file (damaged, or not a model.pt written by this project: "
                         f"{type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
        raise UsageError(f"{path}: not a titanic-lightning model (expected format {MODEL_FORMAT})")
    return data


def plot_curves(history: list[dict], output_dir: Path, name: str, best_epoch: int | None) -> Path | None:
    """Train/val loss and val accuracy per epoch (rows of `epoch`, `train_loss`, ...), best epoch marked."""
    if not history:
        return None
    from matplotlib.figure import Figure

    from titanic_lightning.io.outputs import writing

    epochs = [row["epoch"] for row in history]
    series = {key: [row.get(key, float("nan")) for row in history] for key in ("train_loss", "val_loss", "val_acc")}
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, series["train_loss"], label="train_loss")
    ax_loss.plot(epochs, series["val_loss"], label="val_loss")
    ax_loss.set(xlabel="epoch", ylabel="BCE loss", title="Loss")
    ax_acc.plot(epochs, series["val_acc"], color="tab:green", label="val_acc")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    for ax in (ax_loss, ax_acc):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch {best_epoch}")
        ax.legend()

    with writing(Path(output_dir), [name], "--output_dir", ROLE) as files:
        return files.write(name, lambda tmp: fig.savefig(tmp, format="png", dpi=100))

"""The command lines of `entry.predict` and `entry.export`, parsed like the training one
(`titanic_lightning.config`): jsonargparse over a dataclass, unknown flags rejected, no torch import,
so `--help` answers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from titanic_lightning.config import _parse


@dataclass
class PredictConfig:
    """Score Kaggle-format passenger rows with a trained model.

    Args:
        model: A model directory, its model.pt, a model.tar.gz, or an s3://bucket/key URI of one.
        csv: Kaggle-format CSV (Survived optional; with it, accuracy and AUROC are printed).
        out: Output CSV (PassengerId,probability,prediction); default: standard output.
        debug: Show tracebacks instead of one-line errors.
    """

    model: str
    csv: str
    out: Optional[str] = None
    debug: bool = False


@dataclass
class ExportConfig:
    """Export a trained model with its preprocessing constants as one self-contained file.

    Args:
        model: A model directory, its model.pt, a model.tar.gz, or an s3://bucket/key URI of one.
        format: torchscript (a .pt for torch.jit.load) or onnx (needs the `onnx` extra).
        out: Output file (default: titanic.pt or titanic.onnx in the current directory).
        debug: Show tracebacks instead of one-line errors.
    """

    model: str
    format: Literal["torchscript", "onnx"] = "torchscript"
    out: Optional[str] = None
    debug: bool = False


def parse_predict_args(argv: list[str]) -> PredictConfig:
    return _parse(PredictConfig, "python -m entry.predict", argv)


def parse_export_args(argv: list[str]) -> ExportConfig:
    return _parse(ExportConfig, "python -m entry.export", argv)

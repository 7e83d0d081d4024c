"""Batch prediction: a trained model + a Kaggle-format CSV → `PassengerId,probability,prediction`; with
`Survived` in the rows, accuracy and AUROC too (on stderr when the CSV goes to standard output).

Run: `python -m entry.predict --model model/ --csv data/test_passengers.csv [--out predictions.csv]`
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from titanic_lightning.config import PredictConfig
from titanic_lightning.contracts import MODEL_FILE
from titanic_lightning.data.prepare import LABEL, read_passengers
from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import check_output_file, writing
from titanic_lightning.serving.model_source import locate_model
from titanic_lightning.serving.scoring import ID_COLUMN, Scorer, label_metrics

ROLE = "predict"  # the command that writes prediction files (see `outputs`)


def model_inputs(model: str) -> list[tuple[str, Path]]:
    """The files `--model` may name, which no output may overwrite."""
    return [("--model", Path(model)), ("--model", Path(model) / MODEL_FILE)]


def run(cfg: PredictConfig) -> dict[str, float] | None:
    """Score `cfg.csv` with `cfg.model`; write the CSV and return the metrics (None without labels)."""
    csv = Path(cfg.csv)
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        check_output_file(out, "--out", ROLE, model_inputs(cfg.model) + [("--csv", csv)])
    df = read_passengers(csv, require_label=False)
    if ID_COLUMN not in df.columns:
        raise UsageError(f"{csv}: missing required column(s) {ID_COLUMN}")
    labels = torch.tensor(pd.to_numeric(df[LABEL]).to_numpy(), dtype=torch.int64) if LABEL in df.columns else None

    with tempfile.TemporaryDirectory(prefix="titanic-model-") as workdir:
        scorer = Scorer.from_file(*locate_model(cfg.model, Path(workdir)))
    scored = scorer.score_frame(df, source=str(csv))
    metrics = None if labels is None else label_metrics(torch.from_numpy(scored["probability"].to_numpy("float32")), labels)

    if out is None:
        scored.to_csv(sys.stdout, index=False, float_format="%.6f")
    else:
        with writing(out.parent, [out.name], "--out", ROLE) as files:
            files.write(out.name, lambda tmp: scored.to_csv(tmp, index=False, float_format="%.6f"))
    if metrics is not None:
        print(f"rows={len(scored)}; accuracy={metrics['accuracy']:.4f}; auroc={metrics['auroc']:.4f};",
              file=sys.stderr if out is None else sys.stdout, flush=True)
    if out is not None:
        print(f"wrote {len(scored)} predictions to {out}", file=sys.stderr, flush=True)
    return metrics


"""Export a trained model and its preprocessing constants as one file that needs only torch
(TorchScript) or onnxruntime (ONNX).

Run: `python -m entry.export --model model/ --format torchscript|onnx [--out FILE]`

Input, for both formats and feature sets: one float64 matrix `x` of shape [rows, 9] (TorchScript also
takes float32), columns Pclass, Sex, Age, SibSp, Parch, Fare, Embarked, Title, CabinKnown:
* Pclass, Age, SibSp, Parch, Fare: the raw Kaggle values; NaN for a missing Age or Fare (the saved
  training median fills it, as in training).
* Sex, Embarked: the index of the value in `sex_categories` / `embarked_categories` (e.g. female=0,
  male=1; C=0, Q=1, S=2); NaN for a missing Embarked (the saved training mode fills it).
* Title: the index in `titles` (Master, Miss, Mr, Mrs, Rare) of the word after the comma in Name (and an
  optional "the"); Mlle and Ms are Miss, Mme is Mrs, anything else (or no name) is Rare.
* CabinKnown: 1 when Cabin is given, else 0. Title and CabinKnown are ignored by the `basic` feature set.
The caller codes the strings (text has no place in the graph) with the category lists stored in the
file; codes outside them give all-zero one-hot columns, not an exception.
Output: float32 survival probability per row, shape [rows]; survived when above 0.5.

The contract (column order, category lists, feature set) is stored in the file as JSON: TorchScript
extra file `titanic.json` (`torch.jit.load(f, _extra_files={"titanic.json": ""})`), ONNX metadata
property `titanic` (`onnx.load(f).metadata_props`).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from titanic_lightning.data.features import TITLES
from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import writing
from titanic_lightning.serving.scoring import Scorer

INPUT_COLUMNS = ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked", "Title", "CabinKnown")
CONTRACT_NAME = "titanic"
ROLE = "export"  # the command that writes exported files (see `outputs`)
FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


class ExportedModel(nn.Module):
    """Raw coded columns (INPUT_COLUMNS) → the saved features → the MLP → probability. Every feature either
    set makes is a column of one matrix and a saved index picks the model's: one graph serves both sets."""

    def __init__(self, scorer: Scorer):
        super().__init__()
        pre, stats = scorer.preprocessor, scorer.preprocessor.statistics
        embarked = list(stats["embarked_categories"])
        candidates = ["Pclass", "Sex", "Age", "AgeMissing", "SibSp", "Parch", "FamilySize", "Alone", "Fare",
                      "LogFare", "CabinKnown", "Embarked", *(f"Title_{t}" for t in TITLES),
                      *(f"Embarked_{c}" for c in embarked)]
        self.age_median, self.fare_median = float(stats["age_median"]), float(stats["fare_median"])
        self.embarked_fill = float(embarked.index(stats["embarked_fill"]))
        self.register_buffer("embarked_codes", torch.arange(len(embarked), dtype=torch.float64))
        self.register_buffer("title_codes", torch.arange(len(TITLES), dtype=torch.float64))
        self.register_buffer("select", torch.tensor([candidates.index(n) for n in pre.feature_names]))
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(pre.scale, dtype=torch.float64))
        # A frozen copy: callers get plain tensors back (no autograd), and the Scorer is left as it was.
        self.net = copy.deepcopy(scorer.net).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float64)
        pclass, sex, age_raw, sibsp, parch = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4]
        fare_raw, embarked_raw, title, cabin = x[:, 5], x[:, 6], x[:, 7], x[:, 8]
        age_missing = torch.isnan(age_raw)
        age = torch.where(age_missing, torch.full_like(age_raw, self.age_median), age_raw)
        fare = torch.where(torch.isnan(fare_raw), torch.full_like(fare_raw, self.fare_median), fare_raw)
        embarked = torch.where(torch.isnan(embarked_raw), torch.full_like(embarked_raw, self.embarked_fill),
                               embarked_raw)
        family = sibsp + parch + 1
        columns = torch.stack([pclass, sex, age, age_missing.to(torch.float64), sibsp, parch, family,
                               (family == 1).to(torch.float64), fare, torch.log1p(torch.clamp(fare, min=0.0)), cabin, embarked],
                              dim=1)
        titles = (title.unsqueeze(1) == self.title_codes).to(torch.float64)
        ports = (embarked.unsqueeze(1) == self.embarked_codes).to(torch.float64)
        features = torch.cat([columns, titles, ports], dim=1).index_select(1, self.select)
        scaled = ((features - self.mean) / self.scale).to(torch.float32)
        return torch.sigmoid(self.net(scaled).squeeze(-1))


def contract(scorer: Scorer) -> dict:
    stats = scorer.preprocessor.statistics
    return {"input_columns": list(INPUT_COLUMNS), "input_dtype": "float64", "sex_categories": list(stats["sex_categories"]),
            "embarked_categories": list(stats["embarked_categories"]), "titles": list(TITLES),
            "feature_set": scorer.preprocessor.feature_set, "output": "survival probability (float32), survived when > 0.5"}


def export(scorer: Scorer, fmt: str, out: Path) -> Path:
    """Write `scorer` as `fmt` to `out` (a partial file renamed into place: `out` is whole or absent)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    module = ExportedModel(scorer).eval()
    meta = json.dumps(contract(scorer))

    def fill(tmp: Path) -> None:
        if fmt == "torchscript":
            torch.jit.save(torch.jit.script(module), str(tmp), _extra_files={f"{CONTRACT_NAME}.json": meta})
        else:
            _export_onnx(module, str(tmp), meta)

    with writing(out.parent, [out.name], "--out", ROLE) as files:
        return files.write(out.name, fill)


def _export_onnx(module: ExportedModel, path: str, meta: str) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it; fail here with the extra's name
    except ImportError as exc:
        raise UsageError(f"--format onnx needs the onnx extra (pip install 'titanic-lightning[onnx]'): {exc}") from None
    example = torch.zeros(2, len(INPUT_COLUMNS), dtype=torch.float64)
    # The exporter reports every optional operator library it skips (torchvision...): not ours to act on.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["x"], output_names=["probability"],
                                    dynamic_shapes=({0: torch.export.Dim("rows")},), verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, {CONTRACT_NAME: meta})
    onnx.save_model(model, path)

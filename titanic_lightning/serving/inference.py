"""SageMaker PyTorch serving handler for a titanic-lightning model (copied to `code/inference.py`).

The serving container calls, per request, `input_fn` → `predict_fn` → `output_fn`, after one
`model_fn(model_dir)` at start-up. It imports `titanic_lightning` from the copies beside this file
(code/ is on its sys.path), so rows are scored exactly as `python -m entry.predict` scores them.

Requests:
    text/csv          Kaggle-format rows with their header line (Survived may be present; it is ignored)
    application/json  a list of row objects, or {"instances": [...]}; null (or an absent key in
                      some rows) is a missing value, as an empty CSV cell is
Responses (Accept):
    application/json  {"predictions": [{"PassengerId": ..., "probability": ..., "prediction": 0|1}, ...]}
    text/csv          PassengerId,probability,prediction
PassengerId is echoed when the rows carry it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from titanic_lightning.artifacts import MODEL_FILE
from titanic_lightning.errors import UsageError, one_line
from titanic_lightning.scoring import Scorer

CSV, JSON = "text/csv", "application/json"

try:  # the serving toolkit turns these into HTTP 415 / 400 instead of 500
    from sagemaker_inference.errors import GenericInferenceToolkitError, UnsupportedFormatError
except ImportError:
    class GenericInferenceToolkitError(ValueError):
        def __init__(self, status_code: int, message: str | None = None, phrase: str | None = None):
            super().__init__(message)
            self.status_code = status_code

    class UnsupportedFormatError(GenericInferenceToolkitError):
        def __init__(self, content_type: str, **kwargs):
            super().__init__(415, f"content type {content_type!r} is not supported; use {CSV} or {JSON}")


def _bad_request(message: str) -> GenericInferenceToolkitError:
    return GenericInferenceToolkitError(400, one_line(message))


def model_fn(model_dir: str) -> Scorer:
    return Scorer.from_file(Path(model_dir) / MODEL_FILE)


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def input_fn(body, content_type: str) -> pd.DataFrame:
    kind = _media_type(content_type)
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        if kind == CSV:
            frame = pd.read_csv(io.BytesIO(raw))
        elif kind == JSON:
            records = json.loads(raw)
            if isinstance(records, dict):
                records = records.get("instances")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise _bad_request('expected a list of row objects or {"instances": [...]}')
            frame = pd.DataFrame.from_records(records)
        else:
            raise UnsupportedFormatError(content_type)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        if isinstance(exc, GenericInferenceToolkitError):
            raise
        raise _bad_request(f"unreadable {kind} body: {exc}") from None
    if frame.empty:
        raise _bad_request("the request holds no rows")
    return frame


def predict_fn(data: pd.DataFrame, model: Scorer) -> pd.DataFrame:
    try:
        return model.score_frame(data, source="request")
    except UsageError as exc:  # an unknown category, a missing column: the client's to fix
        raise _bad_request(str(exc)) from None


def output_fn(prediction: pd.DataFrame, accept: str | None) -> str:
    kinds = [_media_type(a) for a in (accept or JSON).split(",")]
    for kind in kinds:
        if kind in (JSON, "*/*", "application/*", ""):
            return '{"predictions": ' + prediction.to_json(orient="records", double_precision=15) + "}"
        if kind == CSV:
            return prediction.to_csv(index=False)
    raise UnsupportedFormatError(accept)

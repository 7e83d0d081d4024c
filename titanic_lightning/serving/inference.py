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
PassengerId is echoed when the rows carry it. The response's Content-Type is the type chosen.
Errors (raised as the serving toolkit's GenericInferenceToolkitError, which sets the status):
    400  an unreadable body, no rows, or a row the model refuses (a missing column, an unknown
         category, a non-finite or out-of-range number); the message names it
    406  no type in Accept is one of the above
    415  a Content-Type other than the above
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pandas as pd

from titanic_lightning.contracts import MODEL_FILE
from titanic_lightning.data.columns import read_csv_rows
from titanic_lightning.errors import UsageError, one_line
from titanic_lightning.serving.scoring import Scorer

CSV, JSON = "text/csv", "application/json"

try:  # the serving toolkit answers these with their status code instead of 500
    from sagemaker_inference.errors import GenericInferenceToolkitError
except ImportError:  # the same contract as the toolkit's errors module, for use without it
    class BaseInferenceToolkitError(Exception):
        def __init__(self, status_code, message, phrase):
            self.status_code = status_code
            self.message = message
            self.phrase = phrase
            super().__init__(status_code, message, phrase)

    class GenericInferenceToolkitError(BaseInferenceToolkitError):
        def __init__(self, status_code, message=None, phrase=None):
            message = message or "Invalid Request"
            super().__init__(status_code, message, phrase or message)


def _error(status: int, message: str) -> GenericInferenceToolkitError:
    # The toolkit sends `phrase` as the HTTP reason phrase and `message` in the body: one line each.
    return GenericInferenceToolkitError(status, one_line(message))


def _bad_request(message: str) -> GenericInferenceToolkitError:
    return _error(400, message)


def model_fn(model_dir: str) -> Scorer:
    return Scorer.from_file(Path(model_dir) / MODEL_FILE)


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


_LARGEST_FLOAT = int(sys.float_info.max)


def _check_values(records: list[dict]) -> None:
    for number, row in enumerate(records, start=1):
        for column, value in row.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (str, int, float))):
                raise _bad_request(f"row {number}: {column} is a {type(value).__name__}; "
                                   "values must be numbers, strings or null")
            if isinstance(value, int) and abs(value) > _LARGEST_FLOAT:  # json reads 1e999 as inf, 10**999 as an int
                raise _bad_request(f"row {number}: {column} is a number too large for a float")


def _json_constant(name: str) -> float:
    # json reads the non-standard NaN, Infinity and -Infinity; NaN would pass as a missing value.
    if name == "NaN":
        raise _bad_request("NaN is not a value; send null for a missing value")
    return float(name.replace("Infinity", "inf"))  # refused, with its column, by the scoring layer


def input_fn(body, content_type: str) -> pd.DataFrame:
    kind = _media_type(content_type)
    if kind not in (CSV, JSON):
        raise _error(415, f"Content-Type {content_type!r} is not supported; send {CSV} or {JSON}")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        if kind == CSV:
            frame = read_csv_rows(io.BytesIO(raw), "request")  # a row longer than the header is named
        else:
            records = json.loads(raw, parse_constant=_json_constant)
            if isinstance(records, dict):
                records = records.get("instances")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise _bad_request('expected a list of row objects or {"instances": [...]}')
            _check_values(records)
            frame = pd.DataFrame.from_records(records)
    except GenericInferenceToolkitError:
        raise
    except RecursionError:  # json's decoder recurses once per nesting level
        raise _bad_request(f"unreadable {kind} body: nested too deeply") from None
    except UsageError as exc:
        raise _bad_request(str(exc)) from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _bad_request(f"unreadable {kind} body: {exc}") from None
    if frame.empty:
        raise _bad_request("the request holds no rows" if len(frame) == 0 else "the rows hold no values")
    return frame


def predict_fn(data: pd.DataFrame, model: Scorer) -> pd.DataFrame:
    try:
        return model.score_frame(data, source="request")
    except UsageError as exc:  # an unknown category, a missing column: the client's to fix
        raise _bad_request(str(exc)) from None


def _accepted(accept: str) -> list[str]:
    """The media types of an Accept header, most preferred first (q=0 means not acceptable)."""
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        kind, *params = entry.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # an unreadable weight: not an acceptable type
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, position, kind.strip().lower()))
    return [kind for _, _, kind in sorted(ranked)]


def output_fn(prediction: pd.DataFrame, accept: str | None) -> tuple[str, str]:
    """The response body and its Content-Type: the first type of `accept` the handler can write.

    The serving toolkit sends a returned (body, content_type) pair with that Content-Type, rather
    than echoing the request's whole Accept header.
    """
    for kind in _accepted(accept or JSON):
        if kind in (JSON, "application/*", "*/*"):
            return '{"predictions": ' + prediction.to_json(orient="records", double_precision=15) + "}", JSON
        if kind in (CSV, "text/*"):
            return prediction.to_csv(index=False), CSV
    raise _error(406, f"Accept {accept!r} names no supported type; accept {CSV} or {JSON}")

"""SageMaker PyTorch serving handler (copied to `code/inference.py`): `model_fn(model_dir)` once, then
`input_fn` → `predict_fn` → `output_fn` per request, scoring rows exactly as `python -m entry.predict`
does with the `titanic_lightning` copies beside it.

Requests: `text/csv` (Kaggle rows with their header) or `application/json` (a list of row objects, or
{"instances": [...]}; null, or a key left out in MAY_BE_MISSING, is a missing value), in UTF-8 or the
encoding a `charset` parameter names. Responses: the first type of Accept it can write, JSON
({"predictions": [...]}) or CSV, each row's PassengerId, probability and prediction. Errors raise the
serving toolkit's GenericInferenceToolkitError with their status: 400 (a body or row the model refuses,
named), 406 (no supported type in Accept), 415 (another Content-Type, or an unknown charset).
"""

from __future__ import annotations

import codecs
import io
import json
import sys
from pathlib import Path

import pandas as pd

from titanic_lightning.contracts import MODEL_FILE
from titanic_lightning.data.columns import MAY_BE_MISSING, read_csv_rows
from titanic_lightning.errors import UsageError, one_line
from titanic_lightning.serving.scoring import Scorer

CSV, JSON = "text/csv", "application/json"

try:  # the serving toolkit answers these errors with their status code instead of 500
    from sagemaker_inference import content_types
    from sagemaker_inference.errors import GenericInferenceToolkitError
except ImportError:  # the same contract as the toolkit's errors module, for use without it
    content_types = None

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

# The toolkit's Transformer decodes text/csv and application/json bodies as UTF-8 itself, outside any
# handler, so a body in another encoding would be answered 500: they are left to `input_fn`, which answers
# 400 naming the byte. The toolkit reads this list at every request; the container serves this one model.
if isinstance(getattr(content_types, "UTF8_TYPES", None), list):
    content_types.UTF8_TYPES[:] = [kind for kind in content_types.UTF8_TYPES if kind not in (CSV, JSON)]


def _error(status: int, message: str) -> GenericInferenceToolkitError:
    # The toolkit sends `phrase` as the HTTP reason phrase and `message` in the body: one line each.
    return GenericInferenceToolkitError(status, one_line(message))


def model_fn(model_dir: str) -> Scorer:
    return Scorer.from_file(Path(model_dir) / MODEL_FILE)


def _parsed(value: str | None) -> tuple[str, dict[str, str]]:
    """A media type and its parameters: 'text/csv; charset="latin-1"' → ('text/csv', {'charset': 'latin-1'})."""
    kind, *params = (value or "").split(";")
    return kind.strip().lower(), {n.strip().lower(): v.strip().strip('"').strip() for n, _, v in (p.partition("=") for p in params)}


def _text(body, kind: str, content_type: str, charset: str | None) -> str:
    """The request body as text: bytes decoded as `charset`, else UTF-8 (a byte-order mark dropped)."""
    if isinstance(body, str):  # text already: from a caller, or decoded by the toolkit
        return body.removeprefix("\ufeff")
    try:
        encoding = codecs.lookup(charset or "utf-8").name
        return bytes(body).decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except LookupError:  # no such codec, or one that is not a text encoding (zlib, base64)
        raise _error(415, f"Content-Type {content_type!r}: charset {charset!r} is not a text encoding "
                          "Python knows") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1].hex()
        fix = "send it in that encoding" if charset else f"send UTF-8, or name its encoding ({kind}; charset=...)"
        raise _error(400, f"the {kind} body is not {charset or 'UTF-8'}: byte 0x{byte} at offset {exc.start} "
                          f"({exc.reason}); {fix}") from None
    except UnicodeError as exc:  # a codec that fails without naming a byte (punycode, undefined)
        raise _error(400, f"the {kind} body is not {charset}: {exc}") from None


def _check_values(records: list[dict]) -> None:
    for number, row in enumerate(records, start=1):
        for column, value in row.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (str, int, float))):
                raise _error(400, f"row {number}: {column} is a {type(value).__name__}; "
                                  "values must be numbers, strings or null")
            if isinstance(value, int) and abs(value) > sys.float_info.max:  # json reads 1e999 as inf, 10**999 as an int
                raise _error(400, f"row {number}: {column} is a number too large for a float")


def _json_constant(name: str) -> float:
    # json reads the non-standard NaN, Infinity and -Infinity; NaN would pass as a missing value.
    if name == "NaN":
        raise _error(400, "NaN is not a value; send null for a missing value")
    return float(name.replace("Infinity", "inf"))  # refused, with its column, by the scoring layer


def input_fn(body, content_type: str) -> pd.DataFrame:
    kind, params = _parsed(content_type)
    if kind not in (CSV, JSON):
        raise _error(415, f"Content-Type {content_type!r} is not supported; send {CSV} or {JSON}")
    text = _text(body, kind, content_type, params.get("charset") or None)
    if not text.strip():
        raise _error(400, f"the {kind} body is empty")
    try:
        if kind == CSV:
            frame = read_csv_rows(io.StringIO(text), "request")  # a row longer than the header is named
        else:
            records = json.loads(text, parse_constant=_json_constant)
            if isinstance(records, dict):
                records = records.get("instances")
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise _error(400, 'expected a list of row objects or {"instances": [...]}')
            _check_values(records)
            frame = pd.DataFrame.from_records(records)
    except RecursionError:  # json's decoder recurses once per nesting level
        raise _error(400, f"unreadable {kind} body: nested too deeply") from None
    except UsageError as exc:
        raise _error(400, str(exc)) from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise _error(400, f"unreadable {kind} body: {exc}") from None
    if frame.empty:
        raise _error(400, "the request holds no rows" if len(frame) == 0 else "the rows hold no values")
    if kind == JSON:  # a key no row holds makes no column at all; where a missing value is allowed it is one
        frame = frame.assign(**{column: None for column in MAY_BE_MISSING if column not in frame.columns})
    return frame


def predict_fn(data: pd.DataFrame, model: Scorer) -> pd.DataFrame:
    try:
        return model.score_frame(data, source="request")
    except UsageError as exc:  # an unknown category, a missing column: the client's to fix
        raise _error(400, str(exc)) from None


def _accepted(accept: str) -> list[str]:
    """The media types of an Accept header, most preferred first (q=0 means not acceptable)."""
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        kind, params = _parsed(entry)
        try:
            quality = float(params.get("q", 1.0))
        except ValueError:
            quality = 0.0  # an unreadable weight: not an acceptable type
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, position, kind))
    return [kind for _, _, kind in sorted(ranked)]


def output_fn(prediction: pd.DataFrame, accept: str | None) -> tuple[str, str]:
    """(body, Content-Type) for the first type of `accept` the handler can write: the toolkit sends a
    returned pair with that Content-Type, rather than echoing the request's whole Accept header."""
    for kind in _accepted(accept or JSON):
        if kind in (JSON, "application/*", "*/*"):
            return '{"predictions": ' + prediction.to_json(orient="records", double_precision=15) + "}", JSON
        if kind in (CSV, "text/*"):
            return prediction.to_csv(index=False), CSV
    raise _error(406, f"Accept {accept!r} names no supported type; accept {CSV} or {JSON}")

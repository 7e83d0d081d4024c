"""The model directory's `code/`: the SageMaker PyTorch serving functions, called the way the
serving container calls them, in a process whose sys.path holds only code/ and site-packages:
directly (without the serving toolkit), and through the toolkit's own handler service and
`Transformer` (sagemaker-inference, what AWS's PyTorch serving image runs)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

from tests.trained_model import trained_model_dir

# Runs inside the container-like process: argv = model_dir, test CSV; prints one JSON document.
# The handler must import and answer with status codes where the serving toolkit is not installed.
CONTAINER = r"""
import json, sys
sys.modules["sagemaker_inference"] = None  # import fails, as where the toolkit is absent
import titanic_lightning
from inference import input_fn, model_fn, output_fn, predict_fn

model_dir, csv = sys.argv[1], sys.argv[2]
body = open(csv, "rb").read()
model = model_fn(model_dir)
result = {"package": titanic_lightning.__file__}
result["csv_json"] = json.loads(output_fn(predict_fn(input_fn(body, "text/csv"), model), "application/json")[0])
records = [{k: (None if v != v else v) for k, v in row.items()} for row in json.loads(sys.argv[3])]
result["json_csv"] = output_fn(predict_fn(input_fn(json.dumps({"instances": records}), "application/json"), model),
                               "text/csv")[0]
as_list = input_fn(json.dumps(records).encode(), "application/json; charset=utf-8")
result["list_json"] = json.loads(output_fn(predict_fn(as_list, model), "*/*")[0])
errors = {}
for name, call in {
    "content_type": lambda: input_fn(body, "application/x-npy"),
    "accept": lambda: output_fn(predict_fn(input_fn(body, "text/csv"), model), "application/x-npy"),
    "unknown_sex": lambda: predict_fn(input_fn(json.dumps([dict(records[0], Sex="robot")]), "application/json"), model),
    "not_rows": lambda: input_fn('{"rows": 1}', "application/json"),
}.items():
    try:
        call()
        errors[name] = None
    except Exception as exc:
        errors[name] = [getattr(exc, "status_code", None), getattr(exc, "message", str(exc))]
result["errors"] = errors
result["toolkit"] = [m for m in sys.modules if m.startswith("sagemaker_inference.")]
result["heavy_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "torchmetrics"))
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, prepared) -> Path:
    return trained_model_dir(tmp_path_factory, prepared)


def test_code_dir_is_written_with_the_model(model_dir):
    from titanic_lightning.serving import PACKAGE_MODULES

    code = model_dir / "code"
    assert (code / "inference.py").is_file()
    requirements = (code / "requirements.txt").read_text().split()
    assert "pandas>=2.1" in requirements
    # The image brings torch; the handler needs neither Lightning nor torchmetrics.
    assert not [r for r in requirements if r.startswith(("torch", "lightning"))]
    package = Path(__file__).resolve().parents[1] / "titanic_lightning"
    for name in PACKAGE_MODULES:
        assert (code / "titanic_lightning" / name).read_bytes() == (package / name).read_bytes()


def test_errors_module_stands_alone():
    """errors.py is copied into code/ on its own: no import of the project, not even inside a function,
    where a missing module would fail only when that function runs in the container."""
    import ast

    source = (Path(__file__).resolve().parents[1] / "titanic_lightning" / "errors.py").read_text()
    imported = [node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names]
    assert not [m for m in imported if m and m.startswith("titanic_lightning")]


def test_handler_runs_without_the_project(model_dir, prepared, tmp_path):
    from titanic_lightning.serving.scoring import Scorer

    rows = pd.read_csv(prepared / "test_passengers.csv").head(12)
    rows.loc[0, ["Age", "Embarked", "Cabin"]] = [None, None, None]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    # -S skips site-packages' .pth files, among them the editable install of this project.
    env = {"PYTHONPATH": f"{model_dir / 'code'}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", CONTAINER, str(model_dir), str(tmp_path / "rows.csv"),
         rows.to_json(orient="records")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["package"].startswith(str(model_dir / "code"))
    assert out["heavy_modules"] == []  # scoring needs torch, numpy and pandas only
    assert out["toolkit"] == []

    expected = Scorer.from_file(model_dir / "model.pt").score_frame(rows)
    served = pd.DataFrame(out["csv_json"]["predictions"])
    assert served["PassengerId"].tolist() == rows["PassengerId"].tolist()
    assert served["probability"].to_numpy() == pytest.approx(expected["probability"].to_numpy(), abs=1e-7)
    assert served["prediction"].tolist() == expected["prediction"].tolist()
    from_json = pd.read_csv(io.StringIO(out["json_csv"]))
    assert list(from_json.columns) == ["PassengerId", "probability", "prediction"]
    assert from_json["probability"].to_numpy() == pytest.approx(expected["probability"].to_numpy(), abs=1e-7)
    assert pd.DataFrame(out["list_json"]["predictions"])["prediction"].tolist() == expected["prediction"].tolist()

    errors = out["errors"]
    assert errors["content_type"][0] == 415 and "application/x-npy" in errors["content_type"][1]
    assert errors["accept"][0] == 406 and "application/x-npy" in errors["accept"][1]
    assert errors["unknown_sex"][0] == 400 and "Sex" in errors["unknown_sex"][1] and "robot" in errors["unknown_sex"][1]
    assert errors["not_rows"][0] == 400 and "instances" in errors["not_rows"][1]


# Runs inside a container-like process: the toolkit's handler service (what the serving image's
# model server calls) around its Transformer, with the toolkit's default handler filling in
# what code/inference.py leaves out. argv = model_dir; stdin = JSON list of [name, headers, body]
# (body: text, sent as UTF-8, or a list of byte values); prints {name: {"status", "phrase",
# "content_type", "body"}}.
TOOLKIT = r"""
import json, sys
from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer


class RequestProcessor:  # the model server's per-request object (ts/context.py, mms/context.py)
    def __init__(self, request_header):
        self._status_code, self._reason_phrase = 200, None
        self._response_header, self._request_header = {}, request_header

    def get_request_properties(self):
        return self._request_header

    def report_status(self, code, reason_phrase=None):
        self._status_code, self._reason_phrase = code, reason_phrase

    def add_response_property(self, key, value):
        self._response_header[key] = value


class Context:  # the model server's context: system properties, one processor per request
    def __init__(self, model_dir, headers):
        self.system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 1}
        self.request_processor = [RequestProcessor(headers)]

    def set_response_content_type(self, idx, value):
        self.request_processor[idx].add_response_property("content-type", value)

    def set_response_status(self, code=200, phrase="", idx=0):
        self.request_processor[idx].report_status(code, reason_phrase=phrase)


model_dir = sys.argv[1]
service = DefaultHandlerService(Transformer(default_inference_handler=DefaultInferenceHandler()))
service.initialize(Context(model_dir, {}))
results = {}
for name, headers, body in json.load(sys.stdin):
    context = Context(model_dir, headers)
    # The serving image leaves bodies undecoded (decode_input_request=false): raw bytes.
    [response] = service.handle([{"body": bytearray(body.encode() if isinstance(body, str) else body)}], context)
    processor = context.request_processor[0]
    results[name] = {
        "status": processor._status_code, "phrase": processor._reason_phrase,
        "content_type": processor._response_header.get("content-type"),
        "body": response if isinstance(response, str) else bytes(response).decode(),
    }
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def served(model_dir, prepared, tmp_path_factory) -> tuple[dict, pd.DataFrame]:
    """Requests answered through the toolkit's Transformer, and the rows they sent."""
    passengers = pd.read_csv(prepared / "test_passengers.csv")
    # Six rows, the last two with a cabin (whether a passenger's cabin is known is a feature).
    cabin = passengers["Cabin"].notna()
    rows = pd.concat([passengers[~cabin].head(4), passengers[cabin].head(2)], ignore_index=True)
    csv = rows.to_csv(index=False)
    records = [{k: (None if v != v else v) for k, v in row.items()} for row in rows.to_dict(orient="records")]
    as_json = json.dumps(records)
    json_in, csv_in = {"Content-Type": "application/json"}, {"Content-Type": "text/csv"}
    inf_fare = rows.head(2).astype({"Fare": "object"})
    inf_fare.loc[1, "Fare"] = "inf"
    # A name outside ASCII: the same row, scored the same, in whichever encoding the body declares.
    accented = rows.assign(Name=rows["Name"].str.replace(",", " (Zoé),", n=1))
    accented_records = [dict(r, Name=n) for r, n in zip(records, accented["Name"])]
    accented_json, accented_csv = json.dumps(accented_records, ensure_ascii=False), accented.to_csv(index=False)
    no_cabin = [{k: v for k, v in r.items() if k != "Cabin"} for r in records]
    some_cabins = [r if i % 2 else {k: v for k, v in r.items() if k != "Cabin"} for i, r in enumerate(records)]
    requests = [
        ("json", dict(json_in, Accept="application/json"), as_json),
        ("csv", dict(csv_in, Accept="text/csv"), csv),
        ("any", dict(json_in, Accept="*/*"), as_json),
        ("no_accept", {"content-type": "application/json; charset=utf-8"}, json.dumps({"instances": records})),
        ("accept_list", dict(json_in, Accept="text/csv, application/json"), as_json),
        ("accept_weights", dict(csv_in, Accept="text/csv;q=0.2, application/json;q=0.9"), csv),
        ("accept_refused", dict(csv_in, Accept="text/csv;q=0, application/json;q=0.1"), csv),
        ("content_type", {"Content-Type": "application/x-npy", "Accept": "application/json"}, csv),
        ("accept", dict(csv_in, Accept="application/x-npy, image/*"), csv),
        ("bad_json", json_in, '[{"Pclass": 3,'),
        ("deep_json", json_in, "[" * 100_000 + "]" * 100_000),
        ("nested_value", json_in, json.dumps([dict(records[0], Age=[[22]])])),
        ("bool_value", json_in, json.dumps([dict(records[0], Age=True)])),
        ("huge_int", json_in, json.dumps([dict(records[0], Fare=10**400)])),
        ("long_first_row", csv_in, csv.replace("\n", ",7\n", 2).replace("Embarked,7", "Embarked", 1)),
        ("long_later_row", csv_in, "\n".join(line + (",7" if n == 3 else "") for n, line in enumerate(csv.split("\n")))),
        ("nan_json", json_in, json.dumps([dict(records[0], Age=float("nan"))])),
        ("unknown_sex", json_in, json.dumps([dict(records[0], Sex="robot")])),
        ("no_rows", json_in, "[]"),
        ("inf_fare_csv", csv_in, inf_fare.to_csv(index=False)),
        ("inf_fare_json", json_in, json.dumps([dict(records[0], Fare=float("inf"))])),
        ("huge_fare_json", json_in, json.dumps([dict(records[0], Fare=1e308)])),
        # Bodies that are not UTF-8, under the exact types the toolkit would decode itself.
        ("latin1_csv", csv_in, list(accented_csv.encode("latin-1"))),
        ("latin1_json", json_in, list(accented_json.encode("latin-1"))),
        ("lone_ff_csv", csv_in, [0xFF]),
        ("lone_ff_json", json_in, [0xFF]),
        ("utf16_csv", csv_in, list(csv.encode("utf-16"))),
        ("utf16_json", json_in, list(as_json.encode("utf-16"))),
        ("empty_csv", csv_in, ""),
        ("empty_json", json_in, ""),
        ("unknown_charset", {"Content-Type": "text/csv; charset=zlib"}, csv),
        ("latin1_charset_csv", {"Content-Type": "text/csv; charset=ISO-8859-1"}, list(accented_csv.encode("latin-1"))),
        ("latin1_charset_json", {"Content-Type": "application/json; charset=latin-1"},
         list(accented_json.encode("latin-1"))),
        ("utf16_charset_json", {"Content-Type": "application/json; charset=utf-16"}, list(as_json.encode("utf-16"))),
        ("utf8_csv", csv_in, accented_csv),
        ("utf8_bom_json", json_in, list(b"\xef\xbb\xbf" + as_json.encode())),
        # Cabin left out of every row, null in every row, left out of some.
        ("no_cabin_json", json_in, json.dumps(no_cabin)),
        ("null_cabin_json", json_in, json.dumps([dict(r, Cabin=None) for r in records])),
        ("some_cabins_json", json_in, json.dumps(some_cabins)),
        ("no_sex_json", json_in, json.dumps([{k: v for k, v in r.items() if k != "Sex"} for r in records])),
    ]
    tmp = tmp_path_factory.mktemp("toolkit")
    env = {"PYTHONPATH": f"{model_dir / 'code'}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", TOOLKIT, str(model_dir)], input=json.dumps(requests),
        cwd=tmp, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), rows


def _probabilities(answer: dict) -> list[float]:
    assert (answer["status"], answer["content_type"]) == (200, "application/json"), answer
    return [p["probability"] for p in json.loads(answer["body"])["predictions"]]


def test_toolkit_answers_json_and_csv(served, model_dir):
    from titanic_lightning.serving.scoring import Scorer

    answers, rows = served
    expected = Scorer.from_file(model_dir / "model.pt").score_frame(rows)
    for name in ("json", "any", "no_accept", "accept_weights"):
        assert (answers[name]["status"], answers[name]["content_type"]) == (200, "application/json"), name
        got = pd.DataFrame(json.loads(answers[name]["body"])["predictions"])
        assert got["PassengerId"].tolist() == rows["PassengerId"].tolist()
        assert got["probability"].to_numpy() == pytest.approx(expected["probability"].to_numpy(), abs=1e-7)
    for name in ("csv", "accept_list"):
        # The Content-Type is the type chosen, not the request's whole Accept header.
        assert (answers[name]["status"], answers[name]["content_type"]) == (200, "text/csv"), name
        got = pd.read_csv(io.StringIO(answers[name]["body"]))
        assert list(got.columns) == ["PassengerId", "probability", "prediction"]
        assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert answers["accept_refused"]["content_type"] == "application/json"  # q=0: CSV is not acceptable


@pytest.mark.parametrize(("name", "status", "words"), [
    ("content_type", 415, ["application/x-npy", "text/csv"]),
    ("accept", 406, ["application/x-npy, image/*", "application/json"]),
    ("bad_json", 400, ["unreadable application/json"]),
    ("deep_json", 400, ["nested too deeply"]),
    ("nested_value", 400, ["row 1", "Age", "list"]),
    ("bool_value", 400, ["row 1", "Age", "bool"]),
    ("huge_int", 400, ["row 1", "Fare", "too large"]),
    ("long_first_row", 400, ["first row after the header", "more fields than the header"]),
    ("long_later_row", 400, ["line 4", "fields, more than the header"]),
    ("nan_json", 400, ["NaN", "send null"]),
    ("unknown_sex", 400, ["Sex", "robot"]),
    ("no_rows", 400, ["no rows"]),
])
def test_toolkit_answers_client_errors_with_their_status(served, name, status, words):
    answer = served[0][name]
    assert answer["status"] == status, answer
    for word in words:
        assert word in answer["phrase"]
    assert "\n" not in answer["phrase"] and answer["body"].startswith(answer["phrase"])


@pytest.mark.parametrize(("name", "words"), [
    ("latin1_csv", ["the text/csv body is not UTF-8", "byte 0xe9", "charset="]),
    ("latin1_json", ["the application/json body is not UTF-8", "byte 0xe9", "charset="]),
    ("lone_ff_csv", ["the text/csv body is not UTF-8", "byte 0xff at offset 0"]),
    ("lone_ff_json", ["the application/json body is not UTF-8", "byte 0xff at offset 0"]),
    ("utf16_csv", ["the text/csv body is not UTF-8", "byte 0xff at offset 0"]),
    ("utf16_json", ["the application/json body is not UTF-8", "byte 0xff at offset 0"]),
    ("empty_csv", ["the text/csv body is empty"]),
    ("empty_json", ["the application/json body is empty"]),
    ("no_sex_json", ["missing required column(s) Sex"]),
])
def test_toolkit_answers_undecodable_and_empty_bodies_with_400(served, name, words):
    # The toolkit decodes text/csv and application/json bodies itself unless the handler asks it not
    # to; its UnicodeDecodeError would be answered 500.
    answer = served[0][name]
    assert answer["status"] == 400, answer
    for word in words:
        assert word in answer["phrase"]
    assert "\n" not in answer["phrase"] and answer["body"].startswith(answer["phrase"])


def test_toolkit_answers_an_unknown_charset_with_415(served):
    answer = served[0]["unknown_charset"]
    assert answer["status"] == 415, answer
    assert "charset 'zlib'" in answer["phrase"] and "\n" not in answer["phrase"]


def test_toolkit_scores_bodies_in_the_encoding_they_name(served):
    answers = served[0]
    expected = _probabilities(answers["json"])
    for name in ("latin1_charset_csv", "latin1_charset_json", "utf16_charset_json", "utf8_csv", "utf8_bom_json"):
        assert _probabilities(answers[name]) == pytest.approx(expected, abs=1e-7), name


def test_toolkit_takes_cabin_left_out_as_missing(served, model_dir):
    """Cabin may be missing: a key left out of every row is the same as null in every row."""
    from titanic_lightning.serving.scoring import Scorer

    answers, rows = served
    scorer = Scorer.from_file(model_dir / "model.pt")
    without = scorer.score_frame(rows.assign(Cabin=None))["probability"].to_numpy()
    assert _probabilities(answers["no_cabin_json"]) == pytest.approx(without, abs=1e-7)
    assert _probabilities(answers["null_cabin_json"]) == pytest.approx(without, abs=1e-7)
    some = rows.assign(Cabin=[c if i % 2 else None for i, c in enumerate(rows["Cabin"])])
    assert _probabilities(answers["some_cabins_json"]) == pytest.approx(
        scorer.score_frame(some)["probability"].to_numpy(), abs=1e-7)
    assert rows["Cabin"].notna().any()  # the rows' cabins count: leaving them out changes a score
    assert _probabilities(answers["no_cabin_json"]) != pytest.approx(_probabilities(answers["json"]), abs=1e-7)


@pytest.mark.parametrize("name", ["inf_fare_csv", "inf_fare_json", "huge_fare_json"])
def test_toolkit_answers_non_finite_numbers_with_400(served, name):
    answer = served[0][name]
    assert answer["status"] == 400, answer
    assert "Fare" in answer["phrase"]


def test_fallback_errors_match_the_toolkit(monkeypatch):
    """Without the toolkit the handler raises look-alikes with the toolkit's fields and defaults."""
    import importlib.util

    from sagemaker_inference import errors

    monkeypatch.setitem(sys.modules, "sagemaker_inference.errors", None)
    path = Path(__file__).resolve().parents[1] / "titanic_lightning" / "serving" / "inference.py"
    spec = importlib.util.spec_from_file_location("inference_without_toolkit", path)
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    assert handler.GenericInferenceToolkitError is not errors.GenericInferenceToolkitError
    for args in [(406,), (415, "message"), (400, "message", "phrase")]:
        ours, theirs = handler.GenericInferenceToolkitError(*args), errors.GenericInferenceToolkitError(*args)
        assert (ours.status_code, ours.message, ours.phrase, ours.args) == (
            theirs.status_code, theirs.message, theirs.phrase, theirs.args)
    assert [c.__name__ for c in type(ours).__mro__] == [c.__name__ for c in type(theirs).__mro__]

"""`python -m entry.predict`: scores reproduce training's test metrics; model sources (directory,
model.tar.gz, s3://); Kaggle's unlabelled rows with missing values; one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.helpers import clean_env, run_entry
from tests.trained_model import pack, trained_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, prepared) -> Path:
    return trained_model_dir(tmp_path_factory, prepared)


def _predict(capsys, *args: str) -> tuple[int, str, str]:
    """Run the entry in-process (as run_command does for the CLI); return (exit code, stdout, stderr)."""
    from entry.predict import main
    from titanic_lightning.command import run_command

    with pytest.raises(SystemExit) as exited:
        run_command(main, list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_cli_reproduces_test_metrics(model_dir, prepared, tmp_path):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    out = tmp_path / "predictions.csv"
    result = run_entry("predict", "--model", str(model_dir), "--csv", str(prepared / "test_passengers.csv"),
                       "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"accuracy={metrics['test_acc']:.4f};" in result.stdout
    rows = pd.read_csv(prepared / "test_passengers.csv")
    scored = pd.read_csv(out)
    assert list(scored.columns) == ["PassengerId", "probability", "prediction"]
    assert scored["PassengerId"].tolist() == rows["PassengerId"].tolist()
    assert set(scored["prediction"]) <= {0, 1}
    correct = int((scored["prediction"] == rows["Survived"]).sum())
    assert correct == round(metrics["test_acc"] * len(rows))


def test_library_metrics_equal_training_exactly(model_dir, prepared, tmp_path):
    from titanic_lightning.config import PredictConfig
    from titanic_lightning.serving.predict import run

    saved = json.loads((model_dir / "metrics.json").read_text())
    scores = run(PredictConfig(model=str(model_dir), csv=str(prepared / "test_passengers.csv"),
                               out=str(tmp_path / "p.csv")))
    assert scores["accuracy"] == saved["test_acc"]
    assert scores["auroc"] == pytest.approx(saved["test_auroc"], abs=1e-6)


def test_tar_gz_to_stdout_unlabelled_rows_with_missing_values(model_dir, prepared, tmp_path, capsys):
    rows = pd.read_csv(prepared / "test_passengers.csv").drop(columns="Survived").head(20)
    # Kaggle's test file: no Survived, and missing Age, Fare, Cabin and Embarked occur.
    rows.loc[0, ["Age", "Fare", "Cabin", "Embarked"]] = [float("nan"), float("nan"), float("nan"), float("nan")]
    rows.loc[1, "Name"] = "Rothes, the Countess. of (Lucy Noel Martha Dyer-Edwards)"
    csv = tmp_path / "kaggle_test.csv"
    rows.to_csv(csv, index=False)
    archive = pack(model_dir, tmp_path / "model.tar.gz")
    code, out, err = _predict(capsys, "--model", str(archive), "--csv", str(csv))
    assert code == 0, err
    assert "accuracy" not in out + err
    lines = out.strip().splitlines()
    assert lines[0] == "PassengerId,probability,prediction" and len(lines) == 21
    probabilities = [float(line.split(",")[1]) for line in lines[1:]]
    assert all(0.0 < p < 1.0 for p in probabilities)


def _write_rows(tmp_path: Path, prepared: Path, change) -> Path:
    rows = pd.read_csv(prepared / "test_passengers.csv").head(10)
    rows = change(rows)
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    return path


def _model_without_preprocessing(model_dir: Path, tmp_path: Path) -> Path:
    payload = torch.load(model_dir / "model.pt", weights_only=True)
    payload["preprocessing"] = None
    torch.save(payload, tmp_path / "model.pt")
    return tmp_path / "model.pt"


def _model_with_preprocessing(change):
    """model.pt with its embedded preprocessing changed by `change` (a dict → None edit)."""
    def make(model_dir: Path, tmp_path: Path) -> Path:
        payload = torch.load(model_dir / "model.pt", weights_only=True)
        change(payload["preprocessing"])
        torch.save(payload, tmp_path / "model.pt")
        return tmp_path / "model.pt"
    return make


def _truncated(model_dir: Path, tmp_path: Path) -> Path:
    data = (model_dir / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    return tmp_path / "model.pt"


def _garbage(model_dir: Path, tmp_path: Path) -> Path:
    (tmp_path / "model.pt").write_bytes(os.urandom(4096))
    return tmp_path / "model.pt"


def _truncated_archive(model_dir: Path, tmp_path: Path) -> Path:
    archive = pack(model_dir, tmp_path / "model.tar.gz")
    archive.write_bytes(archive.read_bytes()[:2000])
    return archive


BAD_ROWS = {
    "unknown category": (lambda r: r.assign(Sex=["robot"] + r["Sex"].tolist()[1:]), ["Sex", "robot"]),
    "missing column": (lambda r: r.drop(columns="Name"), ["Name"]),
    "missing PassengerId": (lambda r: r.drop(columns="PassengerId"), ["PassengerId"]),
    "bad label": (lambda r: r.assign(Survived=2), ["Survived"]),
    "non-numeric age": (lambda r: r.assign(Age="old"), ["Age", "old"]),
    "infinite fare": (lambda r: r.assign(Fare=[float("inf")] + r["Fare"].tolist()[1:]), ["Fare", "non-finite value inf"]),
    "-inf age": (lambda r: r.assign(Age=float("-inf")), ["Age", "non-finite value -inf", "10 row(s)"]),
    "age 1e308": (lambda r: r.assign(Age=[1e308] + r["Age"].tolist()[1:]), ["Age", "1e+308", "float32"]),
    "family 1e308": (lambda r: r.assign(SibSp=1e308, Parch=1e308), ["SibSp", "1e+308"]),
    "pclass 4": (lambda r: r.assign(Pclass=4), ["Pclass", "value 4", "1, 2 or 3"]),
    "boolean sibsp": (lambda r: r.assign(SibSp=True), ["SibSp", "non-numeric value 'True'"]),
    "a column named twice": (lambda r: pd.concat([r, r[["Age"]]], axis=1), ["header names column(s) Age more than once"]),
    "negative parch": (lambda r: r.assign(Parch=-1), ["Parch", "value -1", "whole number >= 0"]),
    "negative fare": (lambda r: r.assign(Fare=-1.5), ["Fare", "value -1.5", ">= 0"]),
}
def _nan_weights(model_dir: Path, tmp_path: Path) -> Path:
    payload = torch.load(model_dir / "model.pt", weights_only=True)
    payload["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in payload["state_dict"].items()}
    torch.save(payload, tmp_path / "model.pt")
    return tmp_path / "model.pt"


BAD_MODELS = {
    "NaN weights": (_nan_weights, ["NaN or infinite weights"]),
    "no preprocessing": (_model_without_preprocessing, ["preprocessing"]),
    "truncated model.pt": (_truncated, ["not a readable model file"]),
    "garbage model.pt": (_garbage, ["not a readable model file"]),
    "truncated model.tar.gz": (_truncated_archive, ["model.tar.gz"]),
    "preprocessing missing a fitted statistic": (_model_with_preprocessing(lambda p: p["statistics"].pop("fare_median")),
                                                 ["statistics.fare_median is missing"]),
    "preprocessing with a zero scale": (_model_with_preprocessing(lambda p: p["scaler"]["scale"].__setitem__(0, 0.0)),
                                        ["scaler.scale", "> 0"]),
    "preprocessing with categories that are not strings": (
        _model_with_preprocessing(lambda p: p["statistics"].update(embarked_categories=None)),
        ["statistics.embarked_categories"]),
}


def _assert_one_line_usage_error(code: int, err: str, names: list[str], out_dir: Path) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for name in names:
        assert name in err
    assert not any(p.name.startswith("predictions") or p.name.startswith(".predictions") for p in out_dir.iterdir())


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_rows_fail_in_one_line(case, model_dir, prepared, tmp_path, capsys):
    change, names = BAD_ROWS[case]
    csv = _write_rows(tmp_path, prepared, change)
    code, _, err = _predict(capsys, "--model", str(model_dir), "--csv", str(csv), "--out", str(tmp_path / "predictions.csv"))
    _assert_one_line_usage_error(code, err, [str(csv), *names], tmp_path)


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_models_fail_in_one_line(case, model_dir, prepared, tmp_path, capsys):
    make, names = BAD_MODELS[case]
    (tmp_path / "m").mkdir()
    bad = make(model_dir, tmp_path / "m")
    code, _, err = _predict(capsys, "--model", str(bad), "--csv", str(prepared / "test_passengers.csv"),
                            "--out", str(tmp_path / "predictions.csv"))
    _assert_one_line_usage_error(code, err, [str(bad), *names], tmp_path)


@pytest.mark.parametrize("wrong", ["csv", "directory", "missing"])
def test_wrong_thing_as_model(wrong, prepared, tmp_path, capsys):
    given = {"csv": prepared / "test_passengers.csv", "directory": prepared, "missing": tmp_path / "nope"}[wrong]
    code, _, err = _predict(capsys, "--model", str(given), "--csv", str(prepared / "test_passengers.csv"),
                            "--out", str(tmp_path / "predictions.csv"))
    _assert_one_line_usage_error(code, err, [str(given)], tmp_path)


def test_missing_values_are_not_refused_but_non_finite_ones_are(model_dir, prepared, tmp_path, capsys):
    # An empty cell (or pandas' "nan") is a missing Age/Fare/Embarked, filled as in training; inf is refused.
    rows = pd.read_csv(prepared / "test_passengers.csv").drop(columns="Survived").head(3).astype(object)
    rows.loc[0, ["Age", "Fare", "Embarked"]] = ["", "", ""]
    rows.loc[1, ["Age", "Fare"]] = ["nan", "NaN"]
    rows.loc[2, "Fare"] = "inf"
    csv = tmp_path / "rows.csv"
    rows.head(2).to_csv(csv, index=False)
    code, out, err = _predict(capsys, "--model", str(model_dir), "--csv", str(csv))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 3 and ",," not in out and "nan" not in out.lower()
    rows.to_csv(csv, index=False)
    code, out, err = _predict(capsys, "--model", str(model_dir), "--csv", str(csv), "--out", str(tmp_path / "p.csv"))
    _assert_one_line_usage_error(code, err, [str(csv), "Fare", "non-finite value inf", "1 row(s)"], tmp_path)
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("line", [2, 5])
def test_row_with_more_fields_than_the_header_is_named(line, model_dir, prepared, tmp_path, capsys):
    lines = (prepared / "test_passengers.csv").read_text().splitlines()[:8]
    lines[line - 1] += ",7.25"
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join(lines) + "\n")
    code, _, err = _predict(capsys, "--model", str(model_dir), "--csv", str(csv), "--out", str(tmp_path / "predictions.csv"))
    where = ("the first row after the header has more fields than the header" if line == 2
             else f"line {line} has 13 fields, more than the header")
    _assert_one_line_usage_error(code, err, [str(csv), where], tmp_path)


def test_cli_refuses_infinite_fare_in_one_line(model_dir, prepared, tmp_path):
    # Through the real command: inf in Fare once gave an empty probability and an AUROC over NaN.
    rows = pd.read_csv(prepared / "test_passengers.csv").head(20).astype({"Fare": object})
    rows.loc[7, "Fare"] = "inf"
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    out = tmp_path / "predictions.csv"
    result = run_entry("predict", "--model", str(model_dir), "--csv", str(csv), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (f"error: {csv}: column Fare has non-finite value inf (1 row(s)); "
                                     "only finite numbers (or an empty cell where allowed) are accepted")
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"]


@pytest.mark.parametrize(("body", "names"), [
    ('"Fare": Infinity', ["Fare", "non-finite value inf"]),
    ('"Age": -Infinity', ["Age", "non-finite value -inf"]),
    ('"Age": 1e400', ["Age", "non-finite value inf"]),
    ('"Age": 1' + "0" * 400, ["Age", "too large"]),  # the handler refuses it while reading the JSON
    ('"Pclass": 0', ["Pclass", "value 0"]),
    ('"Age": NaN', ["NaN", "send null"]),
])
def test_serving_handler_answers_400_for_non_finite_and_out_of_domain_json(body, names, model_dir):
    # Python's json reads Infinity, -Infinity, 1e400 and a 401-digit integer; the scoring layer refuses
    # them, and the handler turns its UsageError into HTTP 400 instead of a null probability.
    from titanic_lightning.serving.inference import input_fn, predict_fn
    from titanic_lightning.serving.scoring import Scorer

    row = ('{"PassengerId": 1, "Pclass": 3, "Name": "Braund, Mr. Owen Harris", "Sex": "male", "Age": 22, '
           '"SibSp": 1, "Parch": 0, "Fare": 7.25, "Cabin": null, "Embarked": "S", ' + body + "}")
    model = Scorer.from_file(model_dir / "model.pt")
    with pytest.raises(Exception) as raised:
        predict_fn(input_fn(f"[{row}]", "application/json"), model)
    assert getattr(raised.value, "status_code", None) == 400
    for name in names:
        assert name in str(raised.value)


def test_cli_error_has_no_traceback(model_dir, tmp_path):
    result = run_entry("predict", "--model", str(model_dir), "--csv", str(tmp_path / "absent.csv"),
                       "--out", str(tmp_path / "predictions.csv"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.csv'}: no such file"
    assert not (tmp_path / "predictions.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["head -1", "true"])
def test_output_cut_short_by_its_reader_ends_quietly(reader, model_dir, titanic_csv, tmp_path):
    """`entry.predict ... | head -1` in a real shell pipeline: no error line, and the command's own
    status is 141, a Unix tool's when SIGPIPE ends it (the pipeline's is the reader's, 0)."""
    csv = tmp_path / "rows.csv"
    # ~90 KB of predictions, more than a pipe holds: writing goes on after `head` has gone.
    pd.concat([pd.read_csv(titanic_csv)] * 5).to_csv(csv, index=False)
    status = tmp_path / "status"
    script = f'"$0" -m entry.predict --model "$1" --csv "$2" | {reader}; echo "$? ${{PIPESTATUS[*]}}" > "$3"'
    result = subprocess.run(["bash", "-c", script, sys.executable, str(model_dir), str(csv), str(status)],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == ("PassengerId,probability,prediction\n" if reader.startswith("head") else "")
    assert status.read_text().split() == ["0", "141", "0"]


def test_help_and_unknown_flag(tmp_path):
    assert "--model" in run_entry("predict", "--help", cwd=tmp_path).stdout
    result = run_entry("predict", "--model", "m", "--csv", "c", "--threshhold", "0.3", cwd=tmp_path)
    assert result.returncode == 2 and "threshhold" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def s3(fresh_aws):
    """An empty account on the session's moto server, with fake credentials; a boto3 S3 client."""
    import boto3

    return boto3.client("s3")


def test_s3_model(s3, model_dir, prepared, tmp_path, capsys):
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(pack(model_dir, tmp_path / "model.tar.gz")), "models", "job/output/model.tar.gz")
    csv = str(prepared / "test_passengers.csv")
    code, out, err = _predict(capsys, "--model", "s3://models/job/output/model.tar.gz", "--csv", csv,
                              "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert "accuracy=" in out and len(pd.read_csv(tmp_path / "p.csv")) == len(pd.read_csv(csv))
    for uri, message in [("s3://models/job/output/absent.tar.gz", "no such object"),
                         ("s3://Not_A_Bucket/model.tar.gz", "not an S3 object URI"),
                         ("s3://models/", "not an S3 object URI")]:
        code, _, err = _predict(capsys, "--model", uri, "--csv", csv, "--out", str(tmp_path / "q.csv"))
        assert code == 2 and uri in err and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "q.csv").exists()

"""The model directory's `code/`: the SageMaker PyTorch serving functions, called the way the
serving container calls them, in a process whose sys.path holds only code/ and site-packages."""

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
CONTAINER = r"""
import json, sys
import titanic_lightning
from inference import input_fn, model_fn, output_fn, predict_fn

model_dir, csv = sys.argv[1], sys.argv[2]
body = open(csv, "rb").read()
model = model_fn(model_dir)
result = {"package": titanic_lightning.__file__}
result["csv_json"] = json.loads(output_fn(predict_fn(input_fn(body, "text/csv"), model), "application/json"))
records = [{k: (None if v != v else v) for k, v in row.items()} for row in json.loads(sys.argv[3])]
result["json_csv"] = output_fn(predict_fn(input_fn(json.dumps({"instances": records}), "application/json"), model),
                               "text/csv")
as_list = input_fn(json.dumps(records).encode(), "application/json; charset=utf-8")
result["list_json"] = json.loads(output_fn(predict_fn(as_list, model), "*/*"))
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
        errors[name] = [getattr(exc, "status_code", None), str(exc)]
result["errors"] = errors
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


def test_handler_runs_without_the_project(model_dir, prepared, tmp_path):
    from titanic_lightning.scoring import Scorer

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
    assert errors["accept"][0] == 415
    assert errors["unknown_sex"][0] == 400 and "Sex" in errors["unknown_sex"][1] and "robot" in errors["unknown_sex"][1]
    assert errors["not_rows"][0] == 400 and "instances" in errors["not_rows"][1]

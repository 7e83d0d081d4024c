"""`python -m entry.export`: the exported file, loaded in a process that never imports
titanic_lightning, gives the Lightning model's probabilities (MLP + Preprocessor) within 1e-6."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.trained_model import trained_model_dir

# Runs with only site-packages on sys.path: argv = format, model file, input .npy, output .npy.
LOADER = r"""
import json, sys
import numpy as np
fmt, model, inputs, outputs = sys.argv[1:]
x = np.load(inputs, allow_pickle=False)
if fmt == "torchscript":
    import torch
    extra = {"titanic.json": ""}
    module = torch.jit.load(model, _extra_files=extra)
    contract = json.loads(extra["titanic.json"])
    y = module(torch.from_numpy(x)).numpy()
else:
    import onnx, onnxruntime
    contract = json.loads({p.key: p.value for p in onnx.load(model).metadata_props}["titanic"])
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
assert not any(name.startswith("titanic_lightning") for name in sys.modules), "the package was imported"
np.save(outputs, y, allow_pickle=False)
print(json.dumps(contract))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, prepared) -> Path:
    return trained_model_dir(tmp_path_factory, prepared)


def _rows(prepared: Path) -> pd.DataFrame:
    rows = pd.read_csv(prepared / "test_passengers.csv")
    # The held-out rows rarely lack Fare or Embarked; make sure the fills are exercised.
    rows.loc[0, ["Age", "Fare", "Embarked", "Cabin"]] = [None, None, None, None]
    rows.loc[1, ["Fare", "Embarked"]] = [None, None]
    return rows


def _coded(rows: pd.DataFrame, contract: dict) -> np.ndarray:
    """The documented input contract, built from the category lists stored in the file."""
    from titanic_lightning.data.features import title_of

    codes = {
        "Sex": rows["Sex"].map(contract["sex_categories"].index),
        "Embarked": rows["Embarked"].map(lambda v: np.nan if pd.isna(v) else contract["embarked_categories"].index(v)),
        "Title": rows["Name"].map(lambda n: contract["titles"].index(title_of(n))),
        "CabinKnown": rows["Cabin"].notna().astype("float64"),
    }
    return np.column_stack([pd.to_numeric(codes.get(c, rows.get(c))).to_numpy("float64")
                            for c in contract["input_columns"]])


def _run_loader(fmt: str, exported: Path, x: np.ndarray, tmp_path: Path) -> tuple[np.ndarray, dict]:
    np.save(tmp_path / "x.npy", x, allow_pickle=False)
    # -S: no .pth files, so the editable install of this project is not importable.
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-S", "-c", LOADER, fmt, str(exported), str(tmp_path / "x.npy"),
                             str(tmp_path / "y.npy")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(tmp_path / "y.npy", allow_pickle=False), json.loads(result.stdout.strip().splitlines()[-1])


def _export(capsys, *args: str) -> tuple[int, str]:
    from entry.export import main
    from titanic_lightning.command import run_command

    with pytest.raises(SystemExit) as exited:
        run_command(main, list(args))
    return exited.value.code, capsys.readouterr().err


def _onnx_missing() -> str | None:
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    return f"the onnx extra is not installed (missing {', '.join(missing)})" if missing else None


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.skipif(
    _onnx_missing() is not None, reason=_onnx_missing() or ""))])
def test_export_matches_the_lightning_model(fmt, model_dir, prepared, tmp_path, capsys):
    from titanic_lightning.serving.export import contract
    from titanic_lightning.serving.scoring import Scorer

    exported = tmp_path / ("titanic.pt" if fmt == "torchscript" else "titanic.onnx")
    code, err = _export(capsys, "--model", str(model_dir), "--format", fmt, "--out", str(exported))
    assert code == 0, err
    rows = _rows(prepared)
    scorer = Scorer.from_file(model_dir / "model.pt")
    probabilities, stored = _run_loader(fmt, exported, _coded(rows, contract(scorer)), tmp_path)
    assert stored == contract(scorer)
    expected = scorer.probabilities(rows).numpy()
    assert probabilities.shape == expected.shape == (len(rows),)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)


def test_export_errors_are_one_line(model_dir, tmp_path, capsys):
    import torch

    payload = torch.load(model_dir / "model.pt", weights_only=True)
    payload["preprocessing"] = None
    torch.save(payload, tmp_path / "model.pt")
    code, err = _export(capsys, "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "t.pt"))
    assert code == 2 and "preprocessing" in err and str(tmp_path / "model.pt") in err and err.count("\n") == 1
    code, err = _export(capsys, "--model", str(model_dir), "--format", "tflite", "--out", str(tmp_path / "t.pt"))
    assert code == 2 and "--format" in err and "tflite" in err
    code, err = _export(capsys, "--model", str(model_dir), "--out", str(tmp_path / "absent" / "t.pt"))
    assert code == 2 and "--out" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

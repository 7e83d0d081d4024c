"""Bad input, case by case: every row of the tables below must end as exactly one `error: ...` line
(the last line on stderr) that names the file, field or flag at fault, with exit code 2 for bad
usage or data and 1 for runtime failures, no traceback, nothing written, and the same line appended
to SageMaker's failure file.

The commands run in-process through `run_command` (the wrapper every `python -m entry.*` runs
under) for speed; a few cases run through the interpreter as well, to show the same holds for a
real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# Imported before any test runs: Lightning gives its logger a handler on the sys.stderr of the moment,
# which must be the session's, not one test's captured stream that is closed when the test ends.
import lightning.pytorch  # noqa: F401
import numpy as np
import pandas as pd
import pytest
import torch

import entry.predict
import entry.prepare
import entry.train
from tests import helpers
from tests.helpers import REPO, clean_env, npz_declaring, run_entry, write_channel
from titanic_lightning.command import run_command
from titanic_lightning.environment import LAUNCHER_VARIABLES
from titanic_lightning.errors import UsageError

COMMANDS = {"prepare": entry.prepare.main, "train": entry.train.main, "predict": entry.predict.main}
FOREIGN_ENV = (*LAUNCHER_VARIABLES, "TITANIC_CSV")


# --- harness ---------------------------------------------------------------------------------------


@pytest.fixture
def failure_file(tmp_path, monkeypatch) -> Path:
    """SageMaker's failure file, set the way SageMaker sets it, outside the folders the command uses."""
    for key in list(os.environ):
        if key.startswith(FOREIGN_ENV):
            monkeypatch.delenv(key)
    path = tmp_path / "sagemaker" / "failure"
    monkeypatch.setenv("SM_OUTPUT_FAILURE", str(path))
    return path


@pytest.fixture
def work(tmp_path, monkeypatch, failure_file) -> Path:
    """`in/` holds the inputs; the command runs in `cwd/`, where default outputs would land."""
    (tmp_path / "in").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.relative_to(root).parts[0] != "sagemaker"}


def invoke(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """`python -m entry.<command> argv...` in-process: (exit code, stdout, stderr)."""
    return helpers.invoke(COMMANDS[command], argv, capsys)


def assert_one_line_error(code: int, err: str, expected_code: int, names: list[str],
                          failure_file: Path | None) -> str:
    """One `error: ...` line, last on stderr, naming each of `names`, in the failure file too; returns it."""
    assert code == expected_code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    error = lines[-1]
    assert error.startswith("error: "), err
    assert [line for line in lines if line.startswith("error")] == [error], err
    for name in names:
        assert name in error, f"{name!r} is not named in: {error}"
    if failure_file is not None:
        assert failure_file.read_text() == error[:1024] + "\n"
    return error


def check_case(command: str, argv: list[str], names: list[str], work: Path, failure_file: Path, capsys,
               expected_code: int = 2) -> str:
    before = _files(work)
    code, _, err = invoke(command, argv, capsys)
    error = assert_one_line_error(code, err, expected_code, names, failure_file)
    written = _files(work) - before
    assert not written, f"files written: {sorted(map(str, written))}"
    return error


# --- CSV → entry.prepare ---------------------------------------------------------------------------


def _kaggle(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path, Path], None]:
    """A writer of the real file with `change` applied."""
    def write(path: Path, titanic_csv: Path) -> None:
        change(pd.read_csv(titanic_csv)).to_csv(path, index=False)
    return write


def _set(column: str, value, rows: slice) -> Callable[[Path, Path], None]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.loc[df.index[rows], column] = value
        return df
    return _kaggle(change)


def _extra_field(line: int) -> Callable[[Path, Path], None]:
    """The real file with one more field on line `line` (the header is line 1)."""
    def write(path: Path, titanic_csv: Path) -> None:
        lines = titanic_csv.read_text().splitlines()
        lines[line - 1] += ",surplus"
        path.write_text("\n".join(lines) + "\n")
    return write


def _dangling(path: Path, titanic_csv: Path) -> None:
    # The unreadable file. The suite runs as root, where chmod 000 does not stop a read, so the file
    # that cannot be opened is a symlink whose target is gone.
    path.symlink_to(path.parent / "deleted-target")


def _absent(path: Path, titanic_csv: Path) -> None:
    pass


CSV_CASES = {
    # case: (writes the CSV at path from the real one, words the error line must contain)
    "missing file": (_absent, ["no such file"]),
    "unreadable file (dangling symlink)": (_dangling, ["no such file"]),
    "a folder": (lambda path, _: path.mkdir(parents=True), ["is a folder; give a file"]),
    "a device": (lambda path, _: path.symlink_to("/dev/null"), ["not a regular file"]),
    "empty file": (lambda path, _: path.write_text(""), ["empty"]),
    "header only": (lambda path, _: path.write_text("PassengerId,Survived,Pclass,Name,Sex,Age\n"), ["no rows"]),
    "missing required columns": (_kaggle(lambda df: df.drop(columns=["Name", "Cabin"])),
                                 ["missing required column", "Name", "Cabin"]),
    "non-numeric Age": (_set("Age", "about forty", slice(3, 4)), ["Age", "'about forty'"]),
    "non-numeric Fare": (_set("Fare", "7s 6d", slice(100, 101)), ["Fare", "'7s 6d'"]),
    # The first row falls in the val split, so it is the transform that refuses it; in every row,
    # the fit on the train split.
    "unknown Sex, one row": (_set("Sex", "unknown", slice(0, 1)), ["(val split)", "Sex", "'unknown'"]),
    "unknown Sex, every row": (_set("Sex", "unknown", slice(None)), ["(train split)", "Sex", "'unknown'"]),
    "unknown Embarked": (_set("Embarked", "X", slice(0, 40)), ["Embarked", "'X'"]),
    "all Age missing": (_set("Age", np.nan, slice(None)), ["Age", "no values"]),
    # Non-finite numbers: pandas reads inf, -Infinity and 1e400 as floats, not as text.
    "infinite Fare": (_set("Fare", "inf", slice(5, 6)), ["Fare", "non-finite value inf"]),
    "-Infinity Age": (_set("Age", "-Infinity", slice(5, 6)), ["Age", "non-finite value -inf"]),
    "Fare beyond float64 (1e400)": (_set("Fare", "1e400", slice(5, 6)), ["Fare", "non-finite value inf"]),
    # Finite, but beyond float32, the features' type: refused when fitting (row 750 is in the train
    # split) and when transforming (row 0 is in the val split).
    "Age 1e308 in the train split": (_set("Age", "1e308", slice(750, 751)), ["(train split)", "Age", "1e+308", "float32"]),
    "Age 1e308 in the val split": (_set("Age", "1e308", slice(0, 1)), ["(val split)", "Age", "1e+308", "float32"]),
    # Values outside the schema's domain.
    "Pclass 4": (_set("Pclass", 4, slice(5, 6)), ["Pclass", "value 4", "1, 2 or 3"]),
    "Pclass 2.5": (_set("Pclass", 2.5, slice(5, 6)), ["Pclass", "value 2.5", "1, 2 or 3"]),
    "Pclass 0 everywhere": (_set("Pclass", 0, slice(None)), ["(train split)", "Pclass", "value 0", "569 row(s)"]),
    "negative Age": (_set("Age", -3, slice(5, 7)), ["Age", "value -3", "2 row(s)", ">= 0"]),
    "negative SibSp": (_set("SibSp", -1, slice(5, 6)), ["SibSp", "value -1", "whole number >= 0"]),
    "fractional SibSp": (_set("SibSp", 1.5, slice(5, 6)), ["SibSp", "value 1.5", "whole number >= 0"]),
    "negative Parch": (_set("Parch", -2, slice(5, 6)), ["Parch", "value -2", "whole number >= 0"]),
    "negative Fare": (_set("Fare", -7.25, slice(5, 6)), ["Fare", "value -7.25", ">= 0"]),
    # Rows with more fields than the header: named by line, never read as shifted columns.
    "extra field on line 10": (_extra_field(10), ["line 10 has 13 fields, more than the header"]),
    "extra field on the first row": (_extra_field(2), ["the first row after the header has more fields than the header"]),
}


@pytest.mark.parametrize("case", list(CSV_CASES))
def test_bad_csv(case, work, failure_file, titanic_csv, capsys):
    write, names = CSV_CASES[case]
    csv = work / "in" / "passengers.csv"
    write(csv, titanic_csv)
    out = work / "cwd" / "channels"
    check_case("prepare", ["--csv", str(csv), "--out", str(out)], [str(csv), *names], work, failure_file, capsys)
    assert not out.exists()


@pytest.mark.parametrize("column,value", [("Sex", "unknown"), ("Embarked", "X")])
def test_unknown_category_is_refused_when_fitting_and_when_transforming(column, value, titanic_csv):
    from titanic_lightning.data.features import Preprocessor

    rows = pd.read_csv(titanic_csv).head(200)
    fitted = Preprocessor.fit(rows)
    bad = rows.copy()
    bad.loc[5, column] = value
    with pytest.raises(UsageError, match=f"^fitted rows: column {column} has unknown value '{value}'"):
        Preprocessor.fit(bad, source="fitted rows")
    with pytest.raises(UsageError, match=f"^scored rows: column {column} has unknown value '{value}'"):
        fitted.transform(bad, source="scored rows")
    # The saved description keeps its form: the sorted categories seen in training.
    statistics = Preprocessor.from_dict(fitted.to_dict()).to_dict()["statistics"]
    assert statistics["sex_categories"] == ["female", "male"]
    assert statistics["embarked_categories"] == ["C", "Q", "S"]


# --- npz channels and paths → entry.train ----------------------------------------------------------


def _good(path: Path, split: str, **overrides) -> Path:
    return write_channel(path, split, rows=24, **overrides)


def _arrays(split: str, X, y) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        np.savez(path, **{f"X_{split}": X, f"y_{split}": y})
        return path
    return write


def _with(split: str, **overrides) -> Callable[[Path], Path]:
    return lambda path: _good(path, split, **overrides)


def _nan() -> np.ndarray:
    X = np.random.default_rng(0).normal(size=(24, 5)).astype("float32")
    X[7, 2] = np.nan
    return X


def _inf() -> np.ndarray:
    X = np.random.default_rng(0).normal(size=(24, 5)).astype("float32")
    X[0, 0] = np.inf
    return X


def _text(path: Path) -> Path:
    path.write_text("PassengerId,Survived\n1,0\n")
    return path


def _empty_dir(path: Path) -> Path:
    path = path.with_suffix("")
    path.mkdir()
    (path / "train.csv").write_text("not a channel file\n")
    return path


def _dangling_npz(path: Path) -> Path:
    # See _dangling: root reads through chmod 000, a symlink to a deleted file cannot be read by anyone.
    path.symlink_to(path.parent / "deleted.npz")
    return path


def _bzip2(path: Path) -> Path:
    """A valid npz but for its compression: bzip2, which numpy never writes."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_BZIP2) as archive:
        for key, array in (("X_train", np.zeros((24, 5), "float32")), ("y_train", np.zeros(24, "int64"))):
            buf = io.BytesIO()
            np.save(buf, array)
            archive.writestr(f"{key}.npy", buf.getvalue())
    return path


NPZ_CASES = {
    # case: (split that is bad, writer of the bad channel at a path, words the error line must contain)
    "not an npz": ("train", _text, ["not a readable npz file"]),
    "missing keys": ("train", _with("train", X_train=None, X=None), ["missing key X_train"]),
    "object (pickled) arrays": ("train", _arrays("train", np.array([[1, "a"]] * 24, dtype=object), np.zeros(24, "int64")),
                                ["object", "pickled"]),
    "1-D features": ("train", _with("train", X_train=np.zeros(24, "float32")), ["2-D"]),
    "mismatched lengths": ("train", _with("train", y_train=np.zeros(23, "int64")), ["24 feature rows but 23 labels"]),
    "NaN feature": ("train", _with("train", X_train=_nan()), ["NaN"]),
    "infinite feature": ("val", _with("val", X_val=_inf()), ["infinite"]),
    "labels not 0/1": ("train", _with("train", y_train=np.r_[np.zeros(23, "int64"), 2]), ["labels must be 0 or 1"]),
    "zero rows": ("train", _arrays("train", np.zeros((0, 5), "float32"), np.zeros(0, "int64")), ["zero rows"]),
    "feature count differs from train": ("val", _with("val", X_val=np.zeros((24, 4), "float32")),
                                         ["4 features", "has 5"]),
    "channel directory without npz": ("train", _empty_dir, ["holds no .npz file"]),
    "unreadable file (dangling symlink)": ("train", _dangling_npz, ["no such file"]),
    "zero feature columns": ("train", _arrays("train", np.zeros((24, 0), "float32"), np.zeros(24, "int64")),
                             ["features have zero columns"]),
    "bzip2-compressed arrays": ("train", _bzip2, ["array X_train is compressed with zip method 12"]),
    "header declares 10**12 rows": ("train", lambda path: npz_declaring(path, "train", rows=10**12),
                                    ["array X_train declares shape (1000000000000, 7)"]),
    "header and zip entry declare 10**8 rows": ("val", lambda path: npz_declaring(path, "val", 10**8, claim_in_zip=True),
                                                ["array X_val declares shape (100000000, 7)"]),
}


def _train_argv(work: Path, train: Path, val: Path, *extra: str) -> list[str]:
    return ["--train", str(train), "--val", str(val), "--epochs", "1", "--model_dir", str(work / "cwd" / "model"),
            "--output_dir", str(work / "cwd" / "outputs"), *extra]


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_channel(case, work, failure_file, capsys):
    bad_split, write, names = NPZ_CASES[case]
    paths = {split: work / "in" / f"{split}_data.npz" for split in ("train", "val")}
    for split, path in paths.items():
        paths[split] = write(path) if split == bad_split else _good(path, split)
    check_case("train", _train_argv(work, paths["train"], paths["val"]), [str(paths[bad_split]), *names],
               work, failure_file, capsys)


# --- hyperparameters → entry.train -----------------------------------------------------------------


HYPERPARAMETER_CASES = {
    # case: (flags, words the error line must contain)
    "misspelled name": (["--learning_rat", "0.01"], ["--learning_rat"]),
    "non-numeric value": (["--epochs", "ten"], ["--epochs", "ten"]),
    "learning rate zero": (["--learning_rate", "0"], ["--learning_rate"]),
    "learning rate negative": (["--learning_rate", "-0.1"], ["--learning_rate"]),
    "learning rate beyond float32": (["--learning_rate", "1e308"], ["--learning_rate", "1e308"]),
    "weight decay beyond float32": (["--weight_decay", "1e39"], ["--weight_decay", "1e39"]),
    "zero epochs": (["--epochs", "0"], ["--epochs"]),
    "zero batch size": (["--batch_size", "0"], ["--batch_size"]),
    "hidden size 0": (["--hidden_sizes", "[64, 0]"], ["--hidden_sizes"]),
    "checkpoint interval zero": (["--checkpoint_every_n_seconds", "0"], ["--checkpoint_every_n_seconds"]),
    "checkpoint interval not a number": (["--checkpoint_every_n_seconds", "soon"], ["--checkpoint_every_n_seconds", "soon"]),
    # YAML reads these as null, which would silently mean the default folder.
    "model dir a YAML comment": (["--model_dir", "#exp1"], ["--model_dir", "#exp1", "./#exp1"]),
    "model dir ~": (["--model_dir", "~"], ["--model_dir", "'~'"]),
    "output dir null": (["--output_dir=null"], ["--output_dir", "'null'"]),
    "checkpoint dir NULL": (["--checkpoint_dir", "NULL"], ["--checkpoint_dir", "'NULL'"]),
    "checkpoint dir a YAML comment": (["--checkpoint_dir", "#ck"], ["--checkpoint_dir", "#ck"]),
    "csv Null": (["--csv", "Null"], ["--csv", "'Null'"]),
    "model dir empty": (["--model_dir", ""], ["--model_dir", "empty"]),
    # Limits that would otherwise fail after training, when the files are written.
    "model dir name too long": (["--model_dir", "m" * 300], ["--model_dir", "300 bytes", "allows 255"]),
    "output dir path too long": (["--output_dir", "/".join(["o" * 200] * 20)], ["--output_dir", "at most 3840"]),
    "checkpoint dir path too long": (["--checkpoint_dir", "/".join(["c" * 200] * 20)], ["--checkpoint_dir", "3840"]),
    "output dir blank": (["--output_dir", "  "], ["--output_dir", "empty"]),
}


@pytest.mark.parametrize("case", list(HYPERPARAMETER_CASES))
def test_bad_hyperparameter(case, work, failure_file, capsys):
    flags, names = HYPERPARAMETER_CASES[case]
    train, val = _good(work / "in" / "train_data.npz", "train"), _good(work / "in" / "val_data.npz", "val")
    # --epochs comes first so that a bad --epochs in `flags` is the value the parser sees last.
    argv = ["--epochs", "1", "--train", str(train), "--val", str(val), *flags]
    check_case("train", argv, names, work, failure_file, capsys)


# --- model files → entry.train (checkpoint) and entry.predict ---------------------------------------


def _torch_file(obj) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch

        torch.save(obj, path)
    return write


def _model_pt_as_checkpoint(path: Path) -> None:
    _model_file(path)


CHECKPOINT_CASES = {
    # case: (writes last.ckpt, words the error line must contain)
    "truncated zip": (lambda path: path.write_bytes(b"PK\x03\x04" + os.urandom(300)), ["not a readable checkpoint"]),
    "plain text": (lambda path: path.write_text("epoch: 3\nthis is not a checkpoint\n"), ["not a readable checkpoint"]),
    "empty file": (lambda path: path.write_bytes(b""), ["not a readable checkpoint"]),
    "random bytes": (lambda path: path.write_bytes(os.urandom(2048)), ["not a readable checkpoint"]),
    "a list, not a dict": (_torch_file([1, 2, 3]), ["not a training checkpoint", "list"]),
    "a dict without Lightning's keys": (_torch_file({"state_dict": {}, "epoch": 3}),
                                        ["not a training checkpoint", "pytorch-lightning_version", "loops"]),
    "model.pt as last.ckpt": (_model_pt_as_checkpoint, ["not a training checkpoint", "optimizer_states"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoint(case, work, failure_file, capsys):
    write, names = CHECKPOINT_CASES[case]
    checkpoints = work / "in" / "checkpoints"
    checkpoints.mkdir()
    write(checkpoints / "last.ckpt")
    train, val = _good(work / "in" / "train_data.npz", "train"), _good(work / "in" / "val_data.npz", "val")
    error = check_case("train", _train_argv(work, train, val, "--checkpoint_dir", str(checkpoints)),
                       [str(checkpoints / "last.ckpt"), *names], work, failure_file, capsys)
    assert "weights_only" not in error


def _first_tensor(checkpoint: dict):
    return next(iter(checkpoint["state_dict"]))


DAMAGED_CHECKPOINTS = {
    # case: (change to a real last.ckpt of the same run, words the error line must contain)
    "no weights": (lambda c: c.update(state_dict={}), ["weights do not fit this model"]),
    "a weight of another shape": (lambda c: c["state_dict"].update({_first_tensor(c): torch.zeros(1)}),
                                  ["weights do not fit this model"]),
    "NaN weights": (lambda c: c["state_dict"].update({_first_tensor(c): c["state_dict"][_first_tensor(c)] * np.nan}),
                    ["NaN or infinite"]),
    "no fit loop": (lambda c: c.update(loops={}), ["training loop or optimiser state"]),
    "an empty optimiser state": (lambda c: c.update(optimizer_states=[{}]), ["training loop or optimiser state"]),
}


@pytest.mark.parametrize("case", list(DAMAGED_CHECKPOINTS))
def test_damaged_checkpoint_of_the_same_run(case, work, failure_file, capsys):
    change, names = DAMAGED_CHECKPOINTS[case]
    checkpoints = work / "in" / "checkpoints"
    train, val = _good(work / "in" / "train_data.npz", "train"), _good(work / "in" / "val_data.npz", "val")
    argv = _train_argv(work, train, val, "--checkpoint_dir", str(checkpoints))
    code, _, err = invoke("train", argv, capsys)
    assert code == 0, err
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, checkpoints / "last.ckpt")
    argv[argv.index("--epochs") + 1] = "2"
    check_case("train", argv, [str(checkpoints / "last.ckpt"), *names], work, failure_file, capsys)


# --- preprocessing.json → entry.train ---------------------------------------------------------------


def _edit(change: Callable[[dict], object]) -> Callable[[dict], dict]:
    def edit(description: dict) -> dict:
        change(description)
        return description
    return edit


PREPROCESSING_CASES = {
    # case: (edits the real preprocessing.json, words the error line must contain)
    "missing a fitted statistic": (_edit(lambda d: d["statistics"].pop("age_median")), ["statistics.age_median is missing"]),
    "statistics missing": (_edit(lambda d: d.pop("statistics")), ["statistics is missing"]),
    "median as text": (_edit(lambda d: d["statistics"].update(fare_median="14.45")), ["statistics.fare_median"]),
    "median NaN": (_edit(lambda d: d["statistics"].update(age_median=float("nan"))), ["statistics.age_median"]),
    "median beyond float": (_edit(lambda d: d["statistics"].update(age_median=10**400)), ["statistics.age_median"]),
    "categories not strings": (_edit(lambda d: d["statistics"].update(sex_categories=[0, 1])),
                               ["statistics.sex_categories"]),
    "fill value not a category": (_edit(lambda d: d["statistics"].update(embarked_fill="X")), ["embarked_fill"]),
    "unknown feature set": (_edit(lambda d: d.update(feature_set="fancy")), ["feature_set 'fancy'"]),
    "feature names of another set": (_edit(lambda d: d.update(feature_names=d["feature_names"][::-1])),
                                     ["feature_names"]),
    "scaler mean too short": (_edit(lambda d: d["scaler"]["mean"].pop()), ["scaler.mean"]),
    "scale zero": (_edit(lambda d: d["scaler"]["scale"].__setitem__(2, 0.0)), ["scaler.scale", "> 0"]),
    "scale infinite": (_edit(lambda d: d["scaler"]["scale"].__setitem__(0, float("inf"))), ["scaler.scale"]),
    "not an object": (lambda d: [d], ["expected an object"]),
}


@pytest.mark.parametrize("case", list(PREPROCESSING_CASES))
def test_bad_preprocessing(case, work, failure_file, prepared, capsys):
    import json

    edit, names = PREPROCESSING_CASES[case]
    bad = work / "in" / "preprocessing.json"
    # json writes NaN and Infinity as Python's json reads them back, as a hand-edited file might hold them.
    bad.write_text(json.dumps(edit(json.loads((prepared / "preprocessing.json").read_text()))))
    argv = _train_argv(work, prepared / "train_data.npz", prepared / "val_data.npz", "--preprocessing", str(bad))
    check_case("train", argv, [str(bad), "not a usable preprocessing description", *names], work, failure_file, capsys)


ROWS_CASES = {
    # case: (the rows the description states, which file gets the test split, words the error line must contain)
    "train rows of other data": ({"train": 500, "val": 143}, None, ["describes 500 train rows, but --train",
                                                                     "holds 569"]),
    "val rows of other data": ({"train": 569, "val": 100}, None, ["describes 100 val rows, but --val", "holds 143"]),
    "test rows of other data": ({"train": 569, "val": 143, "test": 1}, "test_data.npz",
                                ["describes 1 test rows, but --test", "holds 179"]),
    "counts as text": ({"train": "569"}, None, ["rows.train must be a whole number"]),
    "not a mapping": ([569, 143, 179], None, ["rows must map each split to its row count"]),
}


@pytest.mark.parametrize("beside", [False, True], ids=["--preprocessing", "beside --train"])
@pytest.mark.parametrize("case", list(ROWS_CASES))
def test_preprocessing_of_other_rows(case, beside, work, failure_file, prepared, capsys):
    """A description whose row counts are not the channels' is refused before any work: model.pt
    would hold another data set's transform."""
    import json
    import shutil

    rows, test, names = ROWS_CASES[case]
    description = json.loads((prepared / "preprocessing.json").read_text())
    description["rows"] = rows
    for name in ("train_data.npz", "val_data.npz", "test_data.npz"):
        shutil.copy(prepared / name, work / "in" / name)
    path = work / "in" / "preprocessing.json"
    path.write_text(json.dumps(description))
    extra = ["--test", str(work / "in" / test)] if test else []
    argv = _train_argv(work, work / "in" / "train_data.npz", work / "in" / "val_data.npz", *extra)
    if not beside:
        argv += ["--preprocessing", str(path)]
    named = f"{path} (beside --train)" if beside else f"--preprocessing {path}"
    check_case("train", argv, [named, *names], work, failure_file, capsys)


def _model_file(path: Path) -> Path:
    """A model.pt in the saved format (weights only), without training one."""
    import torch

    from titanic_lightning.io.artifacts import MODEL_FORMAT

    torch.save({"format": MODEL_FORMAT, "state_dict": {"0.weight": torch.randn(64, 20)},
                "hyperparameters": {"input_size": 20, "hidden_sizes": [64]}, "preprocessing": None}, path)
    return path


def _truncated_model_dir(tmp: Path) -> tuple[Path, str]:
    model_dir = tmp / "model"
    model_dir.mkdir()
    data = _model_file(model_dir / "model.pt").read_bytes()
    (model_dir / "model.pt").write_bytes(data[: len(data) // 2])
    return model_dir, str(model_dir / "model.pt")


def _truncated_model_pt(tmp: Path) -> tuple[Path, str]:
    data = _model_file(tmp / "model.pt").read_bytes()
    (tmp / "model.pt").write_bytes(data[:900])
    return tmp / "model.pt", str(tmp / "model.pt")


def _npz_as_model(tmp: Path) -> tuple[Path, str]:
    path = _good(tmp / "train_data.npz", "train")
    return path, str(path)


def _checkpoint_as_model(tmp: Path) -> tuple[Path, str]:
    import torch

    path = tmp / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 12, "state_dict": {"net.0.weight": torch.zeros(2, 2)}}, path)
    return path, str(path)


MODEL_CASES = {
    # case: (makes the --model argument and the name the error must use, words the error must contain)
    "truncated model.pt in a model directory": (_truncated_model_dir, ["not a readable model file"]),
    "truncated model.pt": (_truncated_model_pt, ["not a readable model file"]),
    "npz data given as the model": (_npz_as_model, ["not a readable model file"]),
    "training checkpoint given as the model": (_checkpoint_as_model, ["not a titanic-lightning model"]),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_file(case, work, failure_file, titanic_csv, capsys):
    make, names = MODEL_CASES[case]
    model, shown = make(work / "in")
    out = work / "cwd" / "predictions.csv"
    check_case("predict", ["--model", str(model), "--csv", str(titanic_csv), "--out", str(out)], [shown, *names],
               work, failure_file, capsys)
    assert not out.exists()


# --- failure reporting -----------------------------------------------------------------------------


def test_failure_reason_is_cut_to_1024_characters(work, failure_file, capsys):
    csv = work / "in" / Path(*["d" * 200] * 6) / "passengers.csv"  # a path longer than SageMaker keeps
    error = check_case("prepare", ["--csv", str(csv), "--out", str(work / "cwd" / "d")], [str(csv)],
                       work, failure_file, capsys)
    assert len(error) > 1024
    assert failure_file.read_text() == error[:1024] + "\n"


def test_failure_reasons_are_appended_one_line_each(work, failure_file, capsys):
    missing = work / "in" / "absent.csv"
    first = check_case("prepare", ["--csv", str(missing)], [str(missing)], work, failure_file, capsys)
    code, _, err = invoke("train", ["--epochs", "0"], capsys)
    second = err.strip().splitlines()[-1]
    assert code == 2 and "--epochs" in second
    assert failure_file.read_text().splitlines() == [first, second]


def _fail_at_resume(*args, **kwargs):
    raise RuntimeError("simulated failure\nwhile looking for a checkpoint")


def test_runtime_failure_is_one_line_exit_1(work, failure_file, capsys, monkeypatch):
    import titanic_lightning.training.checkpoints

    # The whole data path and the Trainer are built; then something unexpected goes wrong.
    monkeypatch.setattr(titanic_lightning.training.checkpoints, "checkpoint_to_resume", _fail_at_resume)
    train, val = _good(work / "in" / "train_data.npz", "train"), _good(work / "in" / "val_data.npz", "val")
    code, _, err = invoke("train", _train_argv(work, train, val), capsys)
    error = assert_one_line_error(code, err, 1, ["RuntimeError", "simulated failure while looking for a checkpoint",
                                                 "--debug"], failure_file)
    assert error == ("error: RuntimeError: simulated failure while looking for a checkpoint "
                     "(rerun with --debug for the traceback)")
    assert not (work / "cwd" / "model").exists()


def test_runtime_failure_with_debug_raises_for_the_traceback(work, failure_file, monkeypatch):
    import titanic_lightning.training.checkpoints

    monkeypatch.setattr(titanic_lightning.training.checkpoints, "checkpoint_to_resume", _fail_at_resume)
    train, val = _good(work / "in" / "train_data.npz", "train"), _good(work / "in" / "val_data.npz", "val")
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_command(entry.train.main, _train_argv(work, train, val, "--debug", "true"))
    # The exception goes on to the interpreter, which prints the traceback; the job still gets its reason.
    assert failure_file.read_text() == "error: RuntimeError: simulated failure while looking for a checkpoint\n"


# --- the same through the interpreter --------------------------------------------------------------


def _process_env(failure: Path) -> dict[str, str]:
    env = clean_env(SM_OUTPUT_FAILURE=str(failure))
    env.pop("TITANIC_CSV", None)
    return env


@pytest.mark.slow
def test_processes_report_one_line_usage_errors(tmp_path, titanic_csv):
    failure = tmp_path / "sagemaker" / "failure"
    env = _process_env(failure)
    csv = tmp_path / "passengers.csv"
    _set("Embarked", "X", slice(0, 40))(csv, titanic_csv)
    train = _good(tmp_path / "train_data.npz", "train", X_train=_nan())
    val = _good(tmp_path / "val_data.npz", "val")
    model, _ = _truncated_model_pt(tmp_path)
    runs = [
        (run_entry("prepare", "--csv", str(csv), "--out", str(tmp_path / "channels"), cwd=tmp_path, env=env),
         [str(csv), "Embarked", "'X'"]),
        (run_entry("train", "--train", str(train), "--val", str(val), "--epochs", "1", cwd=tmp_path, env=env),
         [str(train), "NaN"]),
        (run_entry("predict", "--model", str(model), "--csv", str(titanic_csv), "--out", str(tmp_path / "p.csv"),
                   cwd=tmp_path, env=env), [str(model), "not a readable model file"]),
    ]
    errors = [assert_one_line_error(result.returncode, result.stderr, 2, names, None) for result, names in runs]
    assert failure.read_text().splitlines() == errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.pt", "passengers.csv", "sagemaker", "train_data.npz", "val_data.npz"]


RUNTIME_FAILURE = """
import sys
import titanic_lightning.training.checkpoints
from entry.train import main
from titanic_lightning.command import run_command
from titanic_lightning.environment import LAUNCHER_VARIABLES

def fail(*args, **kwargs):
    raise RuntimeError("simulated failure")

titanic_lightning.training.checkpoints.checkpoint_to_resume = fail
run_command(main, sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True])
def test_process_runtime_failure_shows_traceback_only_with_debug(tmp_path, debug):
    failure = tmp_path / "sagemaker" / "failure"
    train, val = _good(tmp_path / "train_data.npz", "train"), _good(tmp_path / "val_data.npz", "val")
    argv = ["--train", str(train), "--val", str(val), "--epochs", "1", "--model_dir", str(tmp_path / "model"),
            *(["--debug", "true"] if debug else [])]
    result = subprocess.run([sys.executable, "-c", RUNTIME_FAILURE, *argv], cwd=REPO, env=_process_env(failure),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    if debug:
        assert "Traceback (most recent call last)" in result.stderr
        assert "in fail\n" in result.stderr  # the frame that raised
        assert result.stderr.strip().splitlines()[-1] == "RuntimeError: simulated failure"
        assert failure.read_text() == "error: RuntimeError: simulated failure\n"
    else:
        error = assert_one_line_error(result.returncode, result.stderr, 1, ["RuntimeError", "simulated failure"], None)
        assert failure.read_text() == error + "\n"
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("argv", [
    ["--model", "m", "--csv", "c.csv", "--out", "#run1.csv"],
    ["--model", "m", "--csv", "c.csv", "--out=~"],
    ["--model", "m", "--csv", "c.csv", "--out", "p" * 240 + ".csv"],
], ids=["comment", "tilde", "name too long for its partial file"])
def test_predict_out_that_cannot_be_taken_as_typed_is_refused(argv, work, failure_file, capsys):
    check_case("predict", argv, ["--out"], work, failure_file, capsys)


def test_export_out_that_yaml_reads_as_null_is_refused(work, failure_file, capsys):
    import entry.export

    before = _files(work)
    code, _, err = helpers.invoke(entry.export.main, ["--model", "m", "--out", "#t.pt"], capsys)
    assert_one_line_error(code, err, 2, ["--out", "#t.pt"], failure_file)
    assert _files(work) == before


def test_text_that_yaml_reads_as_text_is_kept_as_typed():
    from titanic_lightning.config import parse_train_args

    for value in ("./#exp1", "a #b", "it's", "1e3", "true", "~user"):
        assert parse_train_args(["--model_dir", value]).model_dir == value


def test_null_in_a_config_file_still_means_the_default(work):
    from titanic_lightning.config import parse_train_args

    (work / "run.yaml").write_text("model_dir: null\nepochs: 3\n")
    cfg = parse_train_args(["--config", str(work / "run.yaml")])
    assert (cfg.model_dir, cfg.epochs) == (None, 3)


@pytest.mark.parametrize("text", [
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")),
    "epochs: &e 3\npatience: *e\n",
], ids=["billion laughs", "one alias"])
def test_yaml_aliases_in_a_config_file_are_refused_at_once(text, work, failure_file, capsys):
    (work / "in" / "run.yaml").write_text(text)
    check_case("train", ["--config", str(work / "in" / "run.yaml")], ["--config", "run.yaml", "aliases"],
               work, failure_file, capsys)


@pytest.mark.parametrize("text", ['model_dir: "#exp1"\n', "output_dir: '~'\n", "checkpoint_dir: ''\n"],
                         ids=["comment", "tilde", "empty"])
def test_a_config_file_path_that_yaml_reads_again_as_null_is_refused(text, work, failure_file, capsys):
    (work / "in" / "run.yaml").write_text(text)
    flag = "--" + text.split(":")[0]
    check_case("train", ["--config", str(work / "in" / "run.yaml")], ["--config", "run.yaml", flag],
               work, failure_file, capsys)

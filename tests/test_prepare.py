"""entry.prepare: the lesson's split, fitted on train only, and a transform that rebuilds exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers import run_entry
from titanic_lightning.data.features import Preprocessor, feature_names, title_of
from titanic_lightning.data.prepare import load_preprocessing, prepare, split_rows
from titanic_lightning.errors import UsageError


def test_split_sizes_and_files(prepared):
    description = json.loads((prepared / "preprocessing.json").read_text())
    assert description["rows"] == {"train": 569, "val": 143, "test": 179}
    assert description["source_sha256"] == "cd888141e6a2ca5906114d0b6a63d8a3e14edb3326f7bdd56327d14646b68c36"
    for split, rows in description["rows"].items():
        with np.load(prepared / f"{split}_data.npz", allow_pickle=False) as npz:
            X, y = npz[f"X_{split}"], npz[f"y_{split}"]
        assert X.dtype == np.float32 and X.shape == (rows, len(description["feature_names"]))
        assert set(np.unique(y)) == {0, 1}
    # Standardised on train: mean 0, std 1 there (not on val/test).
    with np.load(prepared / "train_data.npz") as npz:
        X = npz["X_train"]
    np.testing.assert_allclose(X.mean(axis=0), 0, atol=1e-5)


def test_test_split_is_stratified(titanic_csv):
    df = pd.read_csv(titanic_csv)
    splits = split_rows(df)
    assert abs(splits["test"]["Survived"].mean() - df["Survived"].mean()) < 0.005
    ids = [set(s["PassengerId"]) for s in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 891


@pytest.mark.parametrize("feature_set", ["basic", "rich"])
def test_val_and_test_rows_do_not_influence_statistics(tmp_path, titanic_csv, feature_set):
    df = pd.read_csv(titanic_csv)
    splits = split_rows(df)
    held_out = pd.concat([splits["val"], splits["test"]]).index
    tampered = df.copy()
    # Extreme values in the held-out rows only; the split itself (labels, order) is unchanged.
    tampered.loc[held_out, "Age"] = 99.0
    tampered.loc[held_out, "Fare"] = 5000.0
    tampered.loc[held_out, "SibSp"] = 8
    tampered_csv = tmp_path / "tampered.csv"
    tampered.to_csv(tampered_csv, index=False)
    original = prepare(titanic_csv, tmp_path / "a", feature_set)
    changed = prepare(tampered_csv, tmp_path / "b", feature_set)
    for key in ("statistics", "scaler", "feature_names"):
        assert original[key] == changed[key], key
    with np.load(tmp_path / "a" / "train_data.npz") as a, np.load(tmp_path / "b" / "train_data.npz") as b:
        np.testing.assert_array_equal(a["X_train"], b["X_train"])
    with np.load(tmp_path / "a" / "val_data.npz") as a, np.load(tmp_path / "b" / "val_data.npz") as b:
        assert not np.array_equal(a["X_val"], b["X_val"])  # the tampering is visible where it belongs


def test_preprocessing_json_rebuilds_identical_features(prepared):
    description = json.loads((prepared / "preprocessing.json").read_text())
    rebuilt = Preprocessor.from_dict(description)
    raw = pd.read_csv(prepared / "test_passengers.csv")
    with np.load(prepared / "test_data.npz") as npz:
        np.testing.assert_array_equal(rebuilt.transform(raw), npz["X_test"])
        np.testing.assert_array_equal(raw["Survived"].to_numpy(), npz["y_test"])


# The columns of each feature set, in the order the arrays hold them (the lesson's seven for "basic").
FEATURE_NAMES = {
    "basic": ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"],
    "rich": ["Pclass", "Sex", "Age", "AgeMissing", "SibSp", "Parch", "FamilySize", "Alone", "LogFare", "CabinKnown",
             "Title_Master", "Title_Miss", "Title_Mr", "Title_Mrs", "Title_Rare", "Embarked_C", "Embarked_Q", "Embarked_S"],
}


@pytest.mark.parametrize("feature_set", FEATURE_NAMES)
def test_feature_names_are_what_each_set_makes(titanic_csv, feature_set):
    fitted = Preprocessor.fit(pd.read_csv(titanic_csv), feature_set)
    assert fitted.feature_names == FEATURE_NAMES[feature_set]
    assert feature_names(feature_set, fitted.statistics["embarked_categories"]) == FEATURE_NAMES[feature_set]
    description = json.loads(json.dumps(fitted.to_dict()))
    assert Preprocessor.from_dict(description).to_dict() == description


def test_empty_cells_stay_missing_values_and_infinite_ones_are_refused(titanic_csv, tmp_path):
    rows = pd.read_csv(titanic_csv).head(300)
    fitted = Preprocessor.fit(rows)
    scored = rows.head(4).astype(object)
    # An empty cell and pandas' own "nan" are a missing Age, Fare or Embarked: filled as in training.
    scored.loc[0, ["Age", "Fare", "Embarked"]] = ["", "", ""]
    scored.loc[1, ["Age", "Fare"]] = ["nan", "NaN"]
    csv = tmp_path / "rows.csv"
    scored.to_csv(csv, index=False)
    features = fitted.transform(pd.read_csv(csv))
    assert np.isfinite(features).all()
    assert features[0, fitted.feature_names.index("AgeMissing")] > 0  # 1, standardised
    scored.loc[2, "Fare"] = "inf"
    scored.to_csv(csv, index=False)
    with pytest.raises(UsageError, match=r"^rows: column Fare has non-finite value inf \(1 row\(s\)\)"):
        fitted.transform(pd.read_csv(csv))


def test_a_number_beyond_the_digit_limit_is_not_valid_json(tmp_path):
    # Python's json refuses integers of more than 4300 digits with a plain ValueError.
    path = tmp_path / "preprocessing.json"
    path.write_text('{"feature_set": "rich", "statistics": {"age_median": ' + "9" * 5000 + "}}")
    with pytest.raises(UsageError, match=f"^{path}: not valid JSON"):
        load_preprocessing(path)


def test_basic_features_are_the_lessons_seven(tmp_path, titanic_csv):
    description = prepare(titanic_csv, tmp_path, "basic")
    assert description["feature_names"] == ["Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"]
    assert description["statistics"]["embarked_fill"] == "S"
    assert description["statistics"]["sex_categories"] == ["female", "male"]


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("Braund, Mr. Owen Harris", "Mr"),
        ("Heikkinen, Miss Laina", "Miss"),
        ("Heikkinen, Miss. Laina", "Miss"),
        ("Palsson, Master Gosta Leonard", "Master"),
        ("Rothes, the Countess. of (Lucy Noel Martha Dyer-Edwards)", "Rare"),
        ("Aubart, Mme. Leontine Pauline", "Mrs"),
        ("Uruchurtu, Don. Manuel E", "Rare"),
        (None, "Rare"),
    ],
)
def test_title_with_or_without_period(name, title):
    assert title_of(name) == title


def test_rich_features_use_titles_from_the_shared_file(prepared, titanic_csv):
    # The shared file writes "Miss"/"Master" without the period: they must still be recognised.
    raw = pd.read_csv(titanic_csv)
    titles = raw["Name"].map(title_of).value_counts()
    assert titles["Miss"] > 150 and titles["Master"] > 30
    description = json.loads((prepared / "preprocessing.json").read_text())
    assert "Title_Miss" in description["feature_names"]


def test_prepare_command(tmp_path, titanic_csv):
    result = run_entry("prepare", "--csv", str(titanic_csv), "--out", str(tmp_path / "d"), "--features", "basic",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train=569 val=143 test=179" in result.stdout
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [  # and the record of the files it wrote
        ".titanic-lightning-files", "preprocessing.json", "test_data.npz", "test_passengers.csv",
        "train_data.npz", "val_data.npz"]


def test_prepare_missing_csv_is_one_line_exit_2(tmp_path):
    result = run_entry("prepare", "--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nope.csv" in result.stderr
    assert not (tmp_path / "d").exists()

"""The passenger → feature transform, fitted on training rows only and saved as plain JSON.

Two feature sets:

* `basic` — the lesson's seven columns (Pclass, Sex, Age, SibSp, Parch, Fare, Embarked):
  Embarked missing → the training mode, Age/Fare missing → the training median, categories coded
  by their sorted training values, everything standardised.
* `rich` — the same passengers seen through more features: title from Name (with or without its
  trailing period), family size, travelling alone, cabin known, age missing, log fare and one-hot
  port, standardised the same way.

`Preprocessor.to_dict()` holds every fitted statistic; `Preprocessor.from_dict()` rebuilds the
identical transform, which is how a trained model scores new passengers.

Sex and Embarked must hold the Kaggle schema's values (female/male, C/Q/S), when fitting and when
transforming: any other value is an error naming the column and the value, never a new category.
Numbers must lie in their domain: Pclass 1, 2 or 3; SibSp and Parch whole numbers >= 0; Age and Fare
>= 0. An empty cell is a missing value (allowed in Age, Fare and Embarked); an infinite value, or one
so large that its standardised feature does not fit float32, is an error naming the column.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # imported where rows are read: a training run on prepared data needs none of it

from titanic_lightning.data.columns import (
    REQUIRED_COLUMNS,
    check_categories,
    check_columns,
    checked_column,
    too_large,
)
from titanic_lightning.errors import UsageError

FEATURE_SETS = ("basic", "rich")
# The default: it scores higher on validation (README, "Accuracy"); basic reproduces the lesson.
DEFAULT_FEATURE_SET = "rich"
TITLES = ("Master", "Miss", "Mr", "Mrs", "Rare")
_STATISTIC_TYPES = {"age_median": "number", "fare_median": "number", "embarked_fill": "string",
                    "sex_categories": "strings", "embarked_categories": "strings"}
_TITLE_ALIASES = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs"}
# "Braund, Mr. Owen Harris", "Heikkinen, Miss Laina", "Rothes, the Countess. of (...)"
_TITLE_RE = re.compile(r",\s*(?:the\s+)?([A-Za-z]+)")


def title_of(name: object) -> str:
    """The passenger's title, folded into TITLES; anything unusual (or no name) is "Rare"."""
    match = _TITLE_RE.search(name) if isinstance(name, str) else None
    if match is None:
        return "Rare"
    title = _TITLE_ALIASES.get(match.group(1), match.group(1))
    return title if title in TITLES else "Rare"


def feature_names(feature_set: str, embarked_categories: Sequence[str]) -> list[str]:
    """The features a set makes, in order; the rich set one-hot codes the fitted ports."""
    if feature_set == "basic":
        return list(REQUIRED_COLUMNS["basic"])
    return ["Pclass", "Sex", "Age", "AgeMissing", "SibSp", "Parch", "FamilySize", "Alone", "LogFare", "CabinKnown",
            *(f"Title_{t}" for t in TITLES), *(f"Embarked_{c}" for c in embarked_categories)]


def _is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return abs(value) <= sys.float_info.max and math.isfinite(value)  # a JSON integer may exceed any float


def _is_strings(value: object) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
            and len(set(value)) == len(value))


def _brief(value: object) -> str:
    try:
        return repr(str(value)[:40])
    except ValueError:  # an integer beyond Python's digit limit for str()
        return type(value).__name__


def description_problem(data: object) -> str | None:
    """What makes `data` unusable as `Preprocessor.to_dict()` output, or None when it is complete."""
    if not isinstance(data, dict):
        return f"expected an object, got {type(data).__name__}"
    feature_set = data.get("feature_set")
    if not isinstance(feature_set, str) or feature_set not in FEATURE_SETS:
        return f"feature_set {feature_set!r} is not one of {', '.join(FEATURE_SETS)}"
    statistics = data.get("statistics")
    if not isinstance(statistics, dict):
        return "statistics is missing or not an object"
    checks = {"number": (_is_number, "a finite number >= 0"), "string": (lambda v: isinstance(v, str), "a string"),
              "strings": (_is_strings, "a non-empty list of distinct strings")}
    for key, kind in _STATISTIC_TYPES.items():
        if key not in statistics:
            return f"statistics.{key} is missing"
        test, wanted = checks[kind]
        if not test(statistics[key]) or (kind == "number" and statistics[key] < 0):
            return f"statistics.{key} must be {wanted}, not {_brief(statistics[key])}"
    if statistics["embarked_fill"] not in statistics["embarked_categories"]:
        return "statistics.embarked_fill is not one of statistics.embarked_categories"
    names = data.get("feature_names")
    if names != feature_names(feature_set, statistics["embarked_categories"]):
        return f"feature_names are not those of the {feature_set} feature set"
    scaler = data.get("scaler")
    if not isinstance(scaler, dict):
        return "scaler is missing or not an object"
    for key in ("mean", "scale"):
        values = scaler.get(key)
        if not isinstance(values, list) or len(values) != len(names):
            return f"scaler.{key} must be a list of {len(names)} numbers, one per feature"
        if not all(_is_number(v) for v in values):
            return f"scaler.{key} holds a value that is not a finite number"
    if not all(v > 0 for v in scaler["scale"]):
        return "scaler.scale holds a value that is not > 0"
    return None


def _codes(values: pd.Series, categories: Sequence[str], column: str, source: str) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(categories)}
    unknown = sorted(set(values.dropna().astype(str)) - set(lookup))
    if unknown:
        raise UsageError(
            f"{source}: column {column} has unknown value(s) {', '.join(map(repr, unknown))}; "
            f"the model knows {', '.join(categories)}"
        )
    missing = values.isna()
    if missing.any():
        raise UsageError(f"{source}: column {column} is empty in {int(missing.sum())} row(s)")
    return values.astype(str).map(lookup).to_numpy(dtype="float64")


class Preprocessor:
    """A fitted transform from raw Kaggle-format rows to standardised float32 features."""

    def __init__(self, feature_set: str, statistics: dict, feature_names: list[str], mean: list[float], scale: list[float]):
        if feature_set not in FEATURE_SETS:
            raise UsageError(f"unknown feature set {feature_set!r}; choose one of {', '.join(FEATURE_SETS)}")
        self.feature_set = feature_set
        self.statistics = statistics
        self.feature_names = feature_names
        self.mean = np.asarray(mean, dtype="float64")
        self.scale = np.asarray(scale, dtype="float64")

    @classmethod
    def fit(cls, df: pd.DataFrame, feature_set: str = DEFAULT_FEATURE_SET, source: str = "training rows") -> Preprocessor:
        """Fit every statistic on `df` (the training split) and nothing else."""
        if feature_set not in FEATURE_SETS:
            raise UsageError(f"--features {feature_set!r}: choose one of {', '.join(FEATURE_SETS)}")
        check_columns(df, feature_set, source)
        check_categories(df, source)
        age, fare = checked_column(df, "Age", source), checked_column(df, "Fare", source)
        if age.isna().all():
            raise UsageError(f"{source}: column Age has no values, so its median cannot be fitted")
        if fare.isna().all():
            raise UsageError(f"{source}: column Fare has no values, so its median cannot be fitted")
        embarked = df["Embarked"].dropna().astype(str)
        if embarked.empty:
            raise UsageError(f"{source}: column Embarked has no values")
        statistics = {
            "age_median": float(age.median()),
            "fare_median": float(fare.median()),
            "embarked_fill": str(embarked.mode().iloc[0]),
            "sex_categories": sorted(df["Sex"].dropna().astype(str).unique().tolist()),
            "embarked_categories": sorted(embarked.unique().tolist()),
        }
        unscaled = cls(feature_set, statistics, [], [0.0], [1.0])
        raw, names = unscaled._raw_features(df, source)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = raw.mean(axis=0), raw.std(axis=0)
        unusable = ~(np.isfinite(mean) & np.isfinite(std))
        if unusable.any():
            j = int(np.flatnonzero(unusable)[0])
            raise too_large(df, names[j], int(np.argmax(np.abs(raw[:, j]))), source, "cannot standardise")
        return cls(feature_set, statistics, names, mean.tolist(), np.where(std > 0, std, 1.0).tolist())

    def _raw_features(self, df: pd.DataFrame, source: str) -> tuple[np.ndarray, list[str]]:
        check_columns(df, self.feature_set, source)
        check_categories(df, source)
        s = self.statistics
        for column in ("Pclass", "SibSp", "Parch"):
            if checked_column(df, column, source).isna().any():
                raise UsageError(f"{source}: column {column} is empty in some rows")
        pclass, sibsp, parch = (checked_column(df, c, source) for c in ("Pclass", "SibSp", "Parch"))
        age_raw = checked_column(df, "Age", source)
        age = age_raw.fillna(s["age_median"])
        fare = checked_column(df, "Fare", source).fillna(s["fare_median"])
        sex = _codes(df["Sex"], s["sex_categories"], "Sex", source)
        embarked = df["Embarked"].where(df["Embarked"].notna(), s["embarked_fill"])
        embarked_codes = _codes(embarked, s["embarked_categories"], "Embarked", source)
        if self.feature_set == "basic":
            columns = {
                "Pclass": pclass, "Sex": sex, "Age": age, "SibSp": sibsp,
                "Parch": parch, "Fare": fare, "Embarked": embarked_codes,
            }
        else:
            family = sibsp + parch + 1
            titles = df["Name"].map(title_of)
            columns = {
                "Pclass": pclass, "Sex": sex, "Age": age, "AgeMissing": age_raw.isna().astype("float64"),
                "SibSp": sibsp, "Parch": parch, "FamilySize": family, "Alone": (family == 1).astype("float64"),
                "LogFare": np.log1p(fare.clip(lower=0)), "CabinKnown": df["Cabin"].notna().astype("float64"),
                **{f"Title_{t}": (titles == t).astype("float64") for t in TITLES},
                **{f"Embarked_{c}": (embarked_codes == i).astype("float64") for i, c in enumerate(s["embarked_categories"])},
            }
        names = list(columns)
        matrix = np.column_stack([np.asarray(columns[n], dtype="float64") for n in names])
        return matrix, names

    def transform(self, df: pd.DataFrame, source: str = "rows") -> np.ndarray:
        """Raw rows → standardised float32 feature matrix, exactly as fitted."""
        raw, names = self._raw_features(df, source)
        if names != self.feature_names:
            raise UsageError(f"{source}: features {names} differ from the fitted {self.feature_names}")
        with np.errstate(over="ignore", invalid="ignore"):
            features = ((raw - self.mean) / self.scale).astype("float32")
        # Finite raw values can still leave float32's range once standardised (1e308, or a tiny scale).
        overflow = ~np.isfinite(features)
        if overflow.any():
            rows, columns = np.nonzero(overflow)
            raise too_large(df, names[columns[0]], int(rows[0]), source,
                             f"in {int(overflow.any(axis=1).sum())} row(s) float32 cannot hold the standardised")
        return features

    def to_dict(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "feature_names": list(self.feature_names),
            "statistics": self.statistics,
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "preprocessing") -> Preprocessor:
        """Rebuild the fitted transform, after checking every part of `data` (see `description_problem`)."""
        problem = description_problem(data)
        if problem is not None:
            raise UsageError(f"{source}: not a usable preprocessing description: {problem}")
        return cls(
            data["feature_set"], dict(data["statistics"]), list(data["feature_names"]),
            list(data["scaler"]["mean"]), list(data["scaler"]["scale"]),
        )

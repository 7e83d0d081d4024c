"""The passenger → feature transform, fitted on training rows only and saved as plain JSON
(`Preprocessor.to_dict`; `from_dict` rebuilds the identical transform to score new passengers).
`basic` is the lesson's seven columns; `rich` adds the title from Name, family size, travelling alone,
cabin known, age missing, log fare and the port one-hot. A missing Embarked, Age or Fare is the training
mode or median, categories are coded by their sorted training values, and all are standardised.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # imported where rows are read: a training run on prepared data needs none of it

from titanic_lightning.data.columns import REQUIRED_COLUMNS, check_categories, check_columns, checked_column, too_large
from titanic_lightning.errors import UsageError

FEATURE_SETS = ("basic", "rich")
# The default: it scores higher on validation (README, "Accuracy"); basic reproduces the lesson.
DEFAULT_FEATURE_SET = "rich"
TITLES = ("Master", "Miss", "Mr", "Mrs", "Rare")
_TITLE_ALIASES = {"Mlle": "Miss", "Ms": "Miss", "Mme": "Mrs"}
# "Braund, Mr. Owen Harris", "Heikkinen, Miss Laina", "Rothes, the Countess. of (...)"
_TITLE_RE = re.compile(r",\s*(?:the\s+)?([A-Za-z]+)")


def title_of(name: object) -> str:
    """The passenger's title, folded into TITLES; anything unusual (or no name) is "Rare"."""
    match = _TITLE_RE.search(name) if isinstance(name, str) else None
    title = _TITLE_ALIASES.get(match.group(1), match.group(1)) if match else None
    return title if title in TITLES else "Rare"


def feature_names(feature_set: str, embarked_categories: Sequence[str]) -> list[str]:
    """The features a set makes, in order; the rich set one-hot codes the fitted ports."""
    if feature_set == "basic":
        return list(REQUIRED_COLUMNS["basic"])
    return ["Pclass", "Sex", "Age", "AgeMissing", "SibSp", "Parch", "FamilySize", "Alone", "LogFare", "CabinKnown",
            *(f"Title_{t}" for t in TITLES), *(f"Embarked_{c}" for c in embarked_categories)]


def _is_number(value: object) -> bool:
    """A finite number: NaN, the infinities and JSON integers beyond any float all fail the size test."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value) and len(set(value)) == len(value)


_MEDIAN = (lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
_STRINGS = (_is_strings, "a non-empty list of distinct strings")
_STATISTICS = {"age_median": _MEDIAN, "fare_median": _MEDIAN, "embarked_fill": (lambda v: isinstance(v, str), "a string"),
               "sex_categories": _STRINGS, "embarked_categories": _STRINGS}


def _brief(value: object) -> str:
    try:
        return repr(str(value)[:40])
    except ValueError:  # an integer beyond Python's digit limit for str()
        return type(value).__name__


def description_problem(data: object) -> str | None:
    """What makes `data` unusable as `Preprocessor.to_dict()` output, or None when it is complete."""
    if not isinstance(data, dict):
        return f"expected an object, got {type(data).__name__}"
    feature_set, statistics, scaler = data.get("feature_set"), data.get("statistics"), data.get("scaler")
    if feature_set not in FEATURE_SETS:
        return f"feature_set {feature_set!r} is not one of {', '.join(FEATURE_SETS)}"
    if not isinstance(statistics, dict):
        return "statistics is missing or not an object"
    for key, (test, wanted) in _STATISTICS.items():
        if key not in statistics:
            return f"statistics.{key} is missing"
        if not test(statistics[key]):
            return f"statistics.{key} must be {wanted}, not {_brief(statistics[key])}"
    if statistics["embarked_fill"] not in statistics["embarked_categories"]:
        return "statistics.embarked_fill is not one of statistics.embarked_categories"
    names = data.get("feature_names")
    if names != feature_names(feature_set, statistics["embarked_categories"]):
        return f"feature_names are not those of the {feature_set} feature set"
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
        raise UsageError(f"{source}: column {column} has unknown value(s) {', '.join(map(repr, unknown))}; "
                         f"the model knows {', '.join(categories)}")
    missing = values.isna()
    if missing.any():
        raise UsageError(f"{source}: column {column} is empty in {int(missing.sum())} row(s)")
    return values.astype(str).map(lookup).to_numpy(dtype="float64")


class Preprocessor:
    """A fitted transform from raw Kaggle-format rows to standardised float32 features."""

    def __init__(self, feature_set: str, statistics: dict, mean: list[float] | float, scale: list[float] | float):
        self.feature_set, self.statistics = feature_set, statistics
        self.feature_names = feature_names(feature_set, statistics["embarked_categories"])
        self.mean, self.scale = np.asarray(mean, dtype="float64"), np.asarray(scale, dtype="float64")

    @classmethod
    def fit(cls, df: pd.DataFrame, feature_set: str = DEFAULT_FEATURE_SET, source: str = "training rows") -> Preprocessor:
        """Fit every statistic on `df` (the training split) and nothing else."""
        if feature_set not in FEATURE_SETS:
            raise UsageError(f"--features {feature_set!r}: choose one of {', '.join(FEATURE_SETS)}")
        check_columns(df, feature_set, source)
        check_categories(df, source)
        age, fare = checked_column(df, "Age", source), checked_column(df, "Fare", source)
        for column, values in (("Age", age), ("Fare", fare)):
            if values.isna().all():
                raise UsageError(f"{source}: column {column} has no values, so its median cannot be fitted")
        embarked = df["Embarked"].dropna().astype(str)
        if embarked.empty:
            raise UsageError(f"{source}: column Embarked has no values")
        statistics = {"age_median": float(age.median()), "fare_median": float(fare.median()),
                      "embarked_fill": str(embarked.mode().iloc[0]),
                      "sex_categories": sorted(df["Sex"].dropna().astype(str).unique().tolist()),
                      "embarked_categories": sorted(embarked.unique().tolist())}
        unscaled = cls(feature_set, statistics, 0.0, 1.0)
        raw = unscaled._raw_features(df, source)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = raw.mean(axis=0), raw.std(axis=0)
        unusable = ~(np.isfinite(mean) & np.isfinite(std))
        if unusable.any():
            j = int(np.flatnonzero(unusable)[0])
            raise too_large(df, unscaled.feature_names[j], int(np.argmax(np.abs(raw[:, j]))), source, "cannot standardise")
        return cls(feature_set, statistics, mean.tolist(), np.where(std > 0, std, 1.0).tolist())

    def _raw_features(self, df: pd.DataFrame, source: str) -> np.ndarray:
        """The unscaled features, columns in `feature_names` order."""
        check_columns(df, self.feature_set, source)
        check_categories(df, source)
        s, counts = self.statistics, {}
        for column in ("Pclass", "SibSp", "Parch"):
            counts[column] = checked_column(df, column, source)
            if counts[column].isna().any():
                raise UsageError(f"{source}: column {column} is empty in some rows")
        age_raw = checked_column(df, "Age", source)
        fare = checked_column(df, "Fare", source).fillna(s["fare_median"])
        embarked = df["Embarked"].where(df["Embarked"].notna(), s["embarked_fill"])
        columns = {**counts, "Age": age_raw.fillna(s["age_median"]), "Fare": fare,
                   "Sex": _codes(df["Sex"], s["sex_categories"], "Sex", source),
                   "Embarked": _codes(embarked, s["embarked_categories"], "Embarked", source)}
        if self.feature_set == "rich":
            family = counts["SibSp"] + counts["Parch"] + 1
            titles = df["Name"].map(title_of)
            columns.update({
                "AgeMissing": age_raw.isna(), "FamilySize": family, "Alone": family == 1,
                "LogFare": np.log1p(fare.clip(lower=0)), "CabinKnown": df["Cabin"].notna(),
                **{f"Title_{t}": titles == t for t in TITLES},
                **{f"Embarked_{c}": columns["Embarked"] == i for i, c in enumerate(s["embarked_categories"])},
            })
        return np.column_stack([np.asarray(columns[n], dtype="float64") for n in self.feature_names])

    def transform(self, df: pd.DataFrame, source: str = "rows") -> np.ndarray:
        """Raw rows → standardised float32 feature matrix, exactly as fitted."""
        with np.errstate(over="ignore", invalid="ignore"):
            features = ((self._raw_features(df, source) - self.mean) / self.scale).astype("float32")
        # Finite raw values can still leave float32's range once standardised (1e308, or a tiny scale).
        overflow = ~np.isfinite(features)
        if overflow.any():
            rows, columns = np.nonzero(overflow)
            raise too_large(df, self.feature_names[columns[0]], int(rows[0]), source,
                            f"in {int(overflow.any(axis=1).sum())} row(s) float32 cannot hold the standardised")
        return features

    def to_dict(self) -> dict:
        return {"feature_set": self.feature_set, "feature_names": list(self.feature_names), "statistics": self.statistics,
                "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()}}

    @classmethod
    def from_dict(cls, data: dict, source: str = "preprocessing") -> Preprocessor:
        """Rebuild the fitted transform, after checking every part of `data` (see `description_problem`)."""
        problem = description_problem(data)
        if problem is not None:
            raise UsageError(f"{source}: not a usable preprocessing description: {problem}")
        return cls(data["feature_set"], dict(data["statistics"]), list(data["scaler"]["mean"]), list(data["scaler"]["scale"]))

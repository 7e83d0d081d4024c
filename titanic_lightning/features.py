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
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from titanic_lightning.errors import UsageError

FEATURE_SETS = ("basic", "rich")
# The default: it scores higher on validation (README, "Accuracy"); basic reproduces the lesson.
DEFAULT_FEATURE_SET = "rich"
NUMERIC_COLUMNS = ("Pclass", "Age", "SibSp", "Parch", "Fare")
REQUIRED_COLUMNS = {
    "basic": ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"),
    "rich": ("Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked"),
}
# The values Kaggle's schema allows; anything else is a data error, never a new category.
KNOWN_VALUES = {"Sex": ("female", "male"), "Embarked": ("C", "Q", "S")}
TITLES = ("Master", "Miss", "Mr", "Mrs", "Rare")
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


def check_columns(df: pd.DataFrame, feature_set: str, source: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS[feature_set] if c not in df.columns]
    if missing:
        raise UsageError(f"{source}: missing required column(s) {', '.join(missing)}")


def check_categories(df: pd.DataFrame, source: str) -> None:
    """Every non-missing Sex and Embarked value must be one the Kaggle schema knows."""
    for column, known in KNOWN_VALUES.items():
        if column not in df.columns:
            continue
        values = df[column].dropna().astype(str)
        bad = values[~values.isin(known)]
        if not bad.empty:
            raise UsageError(
                f"{source}: column {column} has unknown value {bad.iloc[0]!r} ({len(bad)} row(s)); "
                f"expected one of {', '.join(known)}"
            )


def _numeric(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        first = df.loc[bad, column].iloc[0]
        raise UsageError(f"{source}: column {column} has non-numeric value {first!r} ({int(bad.sum())} row(s))")
    return values.astype("float64")


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
        age, fare = _numeric(df, "Age", source), _numeric(df, "Fare", source)
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
        std = raw.std(axis=0)
        return cls(feature_set, statistics, names, raw.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist())

    def _raw_features(self, df: pd.DataFrame, source: str) -> tuple[np.ndarray, list[str]]:
        check_columns(df, self.feature_set, source)
        check_categories(df, source)
        s = self.statistics
        for column in ("Pclass", "SibSp", "Parch"):
            if _numeric(df, column, source).isna().any():
                raise UsageError(f"{source}: column {column} is empty in some rows")
        pclass, sibsp, parch = (_numeric(df, c, source) for c in ("Pclass", "SibSp", "Parch"))
        age_raw = _numeric(df, "Age", source)
        age = age_raw.fillna(s["age_median"])
        fare = _numeric(df, "Fare", source).fillna(s["fare_median"])
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
        return ((raw - self.mean) / self.scale).astype("float32")

    def to_dict(self) -> dict:
        return {
            "feature_set": self.feature_set,
            "feature_names": list(self.feature_names),
            "statistics": self.statistics,
            "scaler": {"mean": self.mean.tolist(), "scale": self.scale.tolist()},
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "preprocessing") -> Preprocessor:
        try:
            return cls(
                data["feature_set"], dict(data["statistics"]), list(data["feature_names"]),
                list(data["scaler"]["mean"]), list(data["scaler"]["scale"]),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{source}: not a preprocessing description (missing {exc})") from None

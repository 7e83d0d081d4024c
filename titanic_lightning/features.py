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
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # imported where rows are read: a training run on prepared data needs none of it

from titanic_lightning.errors import UsageError

FEATURE_SETS = ("basic", "rich")
# The default: it scores higher on validation (README, "Accuracy"); basic reproduces the lesson.
DEFAULT_FEATURE_SET = "rich"
REQUIRED_COLUMNS = {
    "basic": ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"),
    "rich": ("Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked"),
}
# The values Kaggle's schema allows; anything else is a data error, never a new category.
KNOWN_VALUES = {"Sex": ("female", "male"), "Embarked": ("C", "Q", "S")}
# Numeric domains: the allowed values of Pclass; the columns that count people (whole numbers >= 0);
# the columns that may not be negative.
PCLASS_VALUES = (1, 2, 3)
COUNT_COLUMNS = ("SibSp", "Parch")
NON_NEGATIVE_COLUMNS = ("Age", "Fare")
TITLES = ("Master", "Miss", "Mr", "Mrs", "Rare")
# The raw columns each derived feature is computed from (a feature not listed comes from its namesake).
_FEATURE_SOURCES = {"AgeMissing": ("Age",), "FamilySize": COUNT_COLUMNS, "Alone": COUNT_COLUMNS, "LogFare": ("Fare",)}
_STATISTIC_TYPES = {"age_median": "number", "fare_median": "number", "embarked_fill": "string",
                    "sex_categories": "strings", "embarked_categories": "strings"}
# "Error tokenizing data. C error: Expected 12 fields in line 5, saw 13"
_EXTRA_FIELDS_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
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


def read_csv_rows(source, name: str) -> pd.DataFrame:
    """Kaggle-format rows from a CSV file or buffer, with one-line errors naming `name`.

    A row with more fields than the header is an error naming the row. pandas would otherwise read
    a first row with one field too many as the sign of an index column, shifting every value one
    column to the left; with `index_col=False` it drops the extra fields instead, with a warning
    that is turned into the error here. A row with fewer fields has missing values, as in Kaggle's files.
    """
    import pandas as pd

    start = source.tell() if hasattr(source, "tell") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(source, index_col=False)
        if start is not None:
            source.seek(start)
        # pandas renames a repeated column (Age, Age.1) and would read only the first: refuse instead.
        header = pd.read_csv(source, header=None, nrows=1, dtype=str, index_col=False).iloc[0].tolist()
    except pd.errors.ParserWarning:
        raise UsageError(f"{name}: the first row after the header has more fields than the header") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"{name}: the file is empty") from None
    except pd.errors.ParserError as exc:
        extra = _EXTRA_FIELDS_RE.search(str(exc))
        if extra:
            raise UsageError(f"{name}: line {extra[2]} has {extra[3]} fields, more than the header") from None
        raise UsageError(f"{name}: not a readable CSV ({' '.join(str(exc).split())})") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: not a readable CSV ({exc})") from None
    repeated = sorted({column for column in header if header.count(column) > 1}, key=str)
    if repeated:
        raise UsageError(f"{name}: the header names column(s) {', '.join(map(str, repeated))} more than once")
    return frame


def _show(value: float) -> str:
    """A number as the user wrote it, near enough: 3, -1, 2.5, 1e+308, inf."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _big_int_as_float(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
        return float(value) if abs(value) <= sys.float_info.max else (math.inf if value > 0 else -math.inf)
    return value


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_float(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")


def _numeric(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as float64; an empty cell stays missing (NaN), text, booleans and infinite values are errors."""
    import pandas as pd

    booleans = df[column].map(lambda v: isinstance(v, (bool, np.bool_)))
    if booleans.any():  # pandas reads a column of True/False as booleans, which are numbers to it
        raise UsageError(f"{source}: column {column} has non-numeric value {str(df[column][booleans].iloc[0])!r} "
                         f"({int(booleans.sum())} row(s))")
    try:
        values = pd.to_numeric(df[column], errors="coerce")
    except OverflowError:  # a Python int beyond int64 (a JSON number with 400 digits); infinite if beyond float
        values = pd.to_numeric(df[column].map(_big_int_as_float), errors="coerce")
    bad = values.isna() & df[column].notna()
    if bad.any():
        # pandas before 2.2 reads text such as "1e400" as not a number; Python reads it as inf,
        # which is then refused as non-finite like everywhere else.
        values = values.where(~bad, df.loc[bad, column].map(_as_float))
        bad = values.isna() & df[column].notna()
    if bad.any():
        first = df.loc[bad, column].iloc[0]
        raise UsageError(f"{source}: column {column} has non-numeric value {first!r} ({int(bad.sum())} row(s))")
    values = values.astype("float64")
    infinite = np.isinf(values)
    if infinite.any():
        raise UsageError(
            f"{source}: column {column} has non-finite value {_show(values[infinite].iloc[0])} "
            f"({int(infinite.sum())} row(s)); only finite numbers (or an empty cell where allowed) are accepted"
        )
    # Features are float32: a raw value beyond its range is infinite there, whatever the transform.
    huge = values.abs() > FLOAT32_MAX
    if huge.any():
        raise UsageError(
            f"{source}: column {column} has value {_show(values[huge].iloc[0])} ({int(huge.sum())} row(s)), "
            f"beyond float32's range (±{FLOAT32_MAX:.4g})"
        )
    return values


def _column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """`_numeric`, then the column's domain: Pclass 1-3, SibSp/Parch whole numbers >= 0, Age/Fare >= 0."""
    values = _numeric(df, column, source)
    if column == "Pclass":
        ok, domain = values.isin(PCLASS_VALUES), "1, 2 or 3"
    elif column in COUNT_COLUMNS:
        ok, domain = (values >= 0) & (values == np.floor(values)), "a whole number >= 0"
    elif column in NON_NEGATIVE_COLUMNS:
        ok, domain = values >= 0, ">= 0"
    else:
        return values
    bad = values.notna() & ~ok
    if bad.any():
        raise UsageError(
            f"{source}: column {column} has value {_show(values[bad].iloc[0])} ({int(bad.sum())} row(s)); "
            f"{column} must be {domain}"
        )
    return values


def _too_large(df: pd.DataFrame, feature: str, row: int, source: str, what: str) -> UsageError:
    """The error for a feature that leaves float range, naming the raw column(s) and value(s) of `row`."""
    columns = _FEATURE_SOURCES.get(feature, (feature,))
    values = ", ".join(_show(_numeric(df, c, source).iloc[row]) for c in columns)
    named = f"column {columns[0]} has value" if len(columns) == 1 else f"columns {', '.join(columns)} have values"
    return UsageError(f"{source}: {named} {values}, too large: {what} feature {feature}")


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
        age, fare = _column(df, "Age", source), _column(df, "Fare", source)
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
            raise _too_large(df, names[j], int(np.argmax(np.abs(raw[:, j]))), source, "cannot standardise")
        return cls(feature_set, statistics, names, mean.tolist(), np.where(std > 0, std, 1.0).tolist())

    def _raw_features(self, df: pd.DataFrame, source: str) -> tuple[np.ndarray, list[str]]:
        check_columns(df, self.feature_set, source)
        check_categories(df, source)
        s = self.statistics
        for column in ("Pclass", "SibSp", "Parch"):
            if _column(df, column, source).isna().any():
                raise UsageError(f"{source}: column {column} is empty in some rows")
        pclass, sibsp, parch = (_column(df, c, source) for c in ("Pclass", "SibSp", "Parch"))
        age_raw = _column(df, "Age", source)
        age = age_raw.fillna(s["age_median"])
        fare = _column(df, "Fare", source).fillna(s["fare_median"])
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
            raise _too_large(df, names[columns[0]], int(rows[0]), source,
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

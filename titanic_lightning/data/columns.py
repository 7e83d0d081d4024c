"""Kaggle's passenger columns, read and checked: each error names the column, the value and how many
rows hold it.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd  # imported where rows are read: a training run on prepared data needs none of it

from titanic_lightning.errors import UsageError

REQUIRED_COLUMNS = {"basic": ("Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"),
                    "rich": ("Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Fare", "Cabin", "Embarked")}
MAY_BE_MISSING = ("Age", "Fare", "Embarked", "Cabin")  # every other column needs a value in every row
KNOWN_VALUES = {"Sex": ("female", "male"), "Embarked": ("C", "Q", "S")}  # anything else is an error
COUNT_COLUMNS = ("SibSp", "Parch")
# The raw columns each derived feature is computed from (a feature not listed comes from its namesake).
FEATURE_SOURCES = {"AgeMissing": ("Age",), "FamilySize": COUNT_COLUMNS, "Alone": COUNT_COLUMNS, "LogFare": ("Fare",)}
FLOAT32_MAX = float(np.finfo(np.float32).max)
# "Error tokenizing data. C error: Expected 12 fields in line 5, saw 13"
_EXTRA_FIELDS_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


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
            raise UsageError(f"{source}: column {column} has unknown value {bad.iloc[0]!r} ({len(bad)} row(s)); "
                             f"expected one of {', '.join(known)}")


def read_csv_rows(source, name: str) -> pd.DataFrame:
    """Kaggle-format rows from a CSV file or buffer, with one-line errors naming `name`. A row with more
    fields than the header is an error (pandas would shift every value); one with fewer has missing values."""
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
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        extra = _EXTRA_FIELDS_RE.search(str(exc))
        if extra:
            raise UsageError(f"{name}: line {extra[2]} has {extra[3]} fields, more than the header") from None
        raise UsageError(f"{name}: not a readable CSV ({' '.join(str(exc).split())})") from None
    repeated = sorted({column for column in header if header.count(column) > 1}, key=str)
    if repeated:
        raise UsageError(f"{name}: the header names column(s) {', '.join(map(str, repeated))} more than once")
    return frame


def _show(value: float) -> str:
    """A number as the user wrote it, near enough: 3, -1, 2.5, 1e+308, inf."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _as_float(value: object) -> float:
    """float(value): infinite for an int beyond float's range, NaN for anything unreadable."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return math.nan


def _numeric(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """The column as float64; an empty cell stays missing (NaN), text, booleans and infinite values are errors."""
    import pandas as pd

    raw = df[column]
    booleans = raw.map(lambda v: isinstance(v, (bool, np.bool_)))
    if booleans.any():  # pandas reads a column of True/False as booleans, which are numbers to it
        raise UsageError(f"{source}: column {column} has non-numeric value {str(raw[booleans].iloc[0])!r} "
                         f"({int(booleans.sum())} row(s))")
    try:
        values = pd.to_numeric(raw, errors="coerce")
    except OverflowError:  # a Python int beyond int64 (a JSON number with 400 digits): read below
        values = pd.Series(np.nan, index=raw.index)
    unread = values.isna() & raw.notna()
    # pandas before 2.2 reads text such as "1e400" as not a number; Python reads it as inf, refused below.
    values = values.where(~unread, raw[unread].map(_as_float)).astype("float64")
    bad = values.isna() & raw.notna()
    if bad.any():
        raise UsageError(f"{source}: column {column} has non-numeric value {raw[bad].iloc[0]!r} ({int(bad.sum())} row(s))")
    infinite = np.isinf(values)
    if infinite.any():
        raise UsageError(f"{source}: column {column} has non-finite value {_show(values[infinite].iloc[0])} "
                         f"({int(infinite.sum())} row(s)); only finite numbers (or an empty cell where allowed) are accepted")
    # Features are float32: a raw value beyond its range is infinite there, whatever the transform.
    huge = values.abs() > FLOAT32_MAX
    if huge.any():
        raise UsageError(f"{source}: column {column} has value {_show(values[huge].iloc[0])} ({int(huge.sum())} row(s)), "
                         f"beyond float32's range (±{FLOAT32_MAX:.4g})")
    return values


def checked_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """`_numeric`, then the column's domain: Pclass 1-3, SibSp/Parch whole numbers >= 0, Age/Fare >= 0."""
    values = _numeric(df, column, source)
    if column == "Pclass":
        ok, domain = values.isin((1, 2, 3)), "1, 2 or 3"
    elif column in COUNT_COLUMNS:
        ok, domain = (values >= 0) & (values == np.floor(values)), "a whole number >= 0"
    elif column in ("Age", "Fare"):
        ok, domain = values >= 0, ">= 0"
    else:
        return values
    bad = values.notna() & ~ok
    if bad.any():
        raise UsageError(f"{source}: column {column} has value {_show(values[bad].iloc[0])} ({int(bad.sum())} row(s)); "
                         f"{column} must be {domain}")
    return values


def too_large(df: pd.DataFrame, feature: str, row: int, source: str, what: str) -> UsageError:
    """The error for a feature that leaves float range, naming the raw column(s) and value(s) of `row`."""
    columns = FEATURE_SOURCES.get(feature, (feature,))
    values = ", ".join(_show(_numeric(df, c, source).iloc[row]) for c in columns)
    named = f"column {columns[0]} has value" if len(columns) == 1 else f"columns {', '.join(columns)} have values"
    return UsageError(f"{source}: {named} {values}, too large: {what} feature {feature}")

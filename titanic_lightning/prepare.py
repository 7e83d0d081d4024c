"""Titanic CSV → `train_data.npz`, `val_data.npz`, `test_data.npz` and `preprocessing.json`.

The lesson's split, without its leak: a stratified 20 % test hold-out (random_state 42), then the
remaining rows 80/20 into train/val (random_state 42) — 569 / 143 / 179 rows on the 891-row file.
Every statistic of the transform is fitted on the train split only and then applied to all three.
The held-out passengers are also kept as raw rows (`test_passengers.csv`) for scoring tests.

Run: `python -m entry.prepare --csv titanic.csv --out data/ [--features basic|rich]`
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from titanic_lightning.csv_source import sha256_of
from titanic_lightning.errors import UsageError
from titanic_lightning.features import DEFAULT_FEATURE_SET, Preprocessor, read_csv_rows

TEST_SIZE = 0.2
VAL_SIZE = 0.2
RANDOM_STATE = 42
LABEL = "Survived"
PREPROCESSING_FILE = "preprocessing.json"
TEST_ROWS_FILE = "test_passengers.csv"


def npz_name(split: str) -> str:
    return f"{split}_data.npz"


def read_passengers(csv: Path, require_label: bool = True) -> pd.DataFrame:
    """Read a Kaggle-format CSV, with one-line errors for the ways it can be wrong."""
    if not csv.is_file():
        raise UsageError(f"{csv}: no such file")
    try:
        df = read_csv_rows(csv, str(csv))
    except OSError as exc:
        raise UsageError(f"{csv}: cannot be read ({exc.strerror or exc})") from None
    if df.empty:
        raise UsageError(f"{csv}: has a header but no rows")
    if require_label:
        if LABEL not in df.columns:
            raise UsageError(f"{csv}: missing required column(s) {LABEL}")
        labels = pd.to_numeric(df[LABEL], errors="coerce")
        if not labels.isin([0, 1]).all():
            raise UsageError(f"{csv}: column {LABEL} must be 0 or 1 in every row")
    return df


def split_rows(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    from sklearn.model_selection import train_test_split

    try:
        rest, test = train_test_split(df, test_size=TEST_SIZE, random_state=RANDOM_STATE, stratify=df[LABEL])
        train, val = train_test_split(rest, test_size=VAL_SIZE, random_state=RANDOM_STATE)
    except ValueError as exc:
        raise UsageError(f"cannot split {len(df)} rows into train/val/test: {exc}") from None
    return {"train": train, "val": val, "test": test}


def prepare(csv: Path, out: Path, feature_set: str = DEFAULT_FEATURE_SET) -> dict:
    """Write the three npz channels and preprocessing.json into `out`; return the description."""
    df = read_passengers(csv)
    splits = split_rows(df)
    pre = Preprocessor.fit(splits["train"], feature_set, source=f"{csv} (train split)")
    description = {
        **pre.to_dict(),
        "rows": {name: len(rows) for name, rows in splits.items()},
        "source_sha256": sha256_of(csv),
        "split": {"test_size": TEST_SIZE, "val_size": VAL_SIZE, "random_state": RANDOM_STATE, "stratify_test": LABEL},
    }
    # Transform every split before touching `out`: bad rows in any split leave nothing behind.
    features = {name: pre.transform(rows, source=f"{csv} ({name} split)") for name, rows in splits.items()}
    out.mkdir(parents=True, exist_ok=True)
    # Stage everything, then move it in: a failure leaves no half-written channel behind.
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        for name, rows in splits.items():
            labels = rows[LABEL].to_numpy(dtype="int64")
            np.savez(staging / npz_name(name), **{f"X_{name}": features[name], f"y_{name}": labels})
        splits["test"].to_csv(staging / TEST_ROWS_FILE, index=False)
        (staging / PREPROCESSING_FILE).write_text(json.dumps(description, indent=2) + "\n")
        for item in sorted(staging.iterdir(), key=lambda p: p.name == PREPROCESSING_FILE):
            item.replace(out / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return description


def load_preprocessing(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a number beyond Python's digit limit
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    Preprocessor.from_dict(data, source=str(path))  # validates the shape
    return data

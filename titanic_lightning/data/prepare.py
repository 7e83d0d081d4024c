"""Titanic CSV → `train_data.npz`, `val_data.npz`, `test_data.npz`, `test_passengers.csv` (the held-out
rows, raw) and `preprocessing.json`: a stratified 20 % test hold-out, then the rest 80/20 into
train/val (random_state 42 both times; 569 / 143 / 179 of 891 rows), every statistic fitted on train.
`preprocessing.json` is removed first and written last, under the folder's lock.

Run: `python -m entry.prepare --csv titanic.csv --out data/ [--features basic|rich]`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from titanic_lightning.contracts import PREPROCESSING_FILE, SPLITS, npz_name
from titanic_lightning.data.columns import read_csv_rows
from titanic_lightning.data.csv_source import sha256_of
from titanic_lightning.data.features import DEFAULT_FEATURE_SET, Preprocessor
from titanic_lightning.errors import UsageError, not_a_file
from titanic_lightning.io import outputs

if TYPE_CHECKING:
    import pandas as pd  # imported where rows are read: a training run on prepared data needs none of it

TEST_SIZE = 0.2
VAL_SIZE = 0.2
RANDOM_STATE = 42
LABEL = "Survived"
TEST_ROWS_FILE = "test_passengers.csv"
ROLE = "prepare"  # the command that writes the channels (see `outputs`)


def prepared_files() -> list[str]:
    """Every file `prepare` writes, by its name in the output folder."""
    return [*(npz_name(split) for split in SPLITS), TEST_ROWS_FILE, PREPROCESSING_FILE]


def check_prepare_outputs(out: Path, flag: str = "--out", csv: Path | None = None) -> None:
    """Before any work: `out` can be written, none of its names is `csv`, and none is a file we did not write."""
    outputs.check_folder(out, flag)
    if csv is not None:
        check_not_overwritten(csv, out, flag)
    outputs.check_owned(out, prepared_files(), flag, ROLE)


def check_not_overwritten(csv: Path, out: Path, flag: str = "--out") -> None:
    if any(outputs.same_file(csv, out / name) for name in prepared_files()):
        raise UsageError(f"{flag} {out}: would overwrite the input --csv {csv}")


def read_passengers(csv: Path, require_label: bool = True) -> pd.DataFrame:
    """Read a Kaggle-format CSV (labels, where present, 0 or 1), with one-line errors."""
    if not csv.is_file():
        raise UsageError(f"{csv}: {not_a_file(csv)}")
    try:
        df = read_csv_rows(csv, str(csv))
    except OSError as exc:
        raise UsageError(f"{csv}: cannot be read ({exc.strerror or exc})") from None
    if df.empty:
        raise UsageError(f"{csv}: has a header but no rows")
    if require_label and LABEL not in df.columns:
        raise UsageError(f"{csv}: missing required column(s) {LABEL}")
    import pandas as pd

    if LABEL in df.columns and not pd.to_numeric(df[LABEL], errors="coerce").isin([0, 1]).all():
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


def prepare(csv: Path, out: Path, feature_set: str = DEFAULT_FEATURE_SET, flag: str = "--out") -> dict:
    """Write the prepared files into `out`, holding its lock throughout; return the description."""
    with outputs.writing(out, prepared_files(), flag, ROLE) as files:
        return write_prepared(files, csv, feature_set, flag)


def write_prepared(files, csv: Path, feature_set: str, flag: str) -> dict:
    """Prepare `csv` into the folder `files` (an `outputs.Writer`) holds."""
    check_not_overwritten(csv, files.folder, flag)
    splits = split_rows(read_passengers(csv))
    pre = Preprocessor.fit(splits["train"], feature_set, source=f"{csv} (train split)")
    description = {**pre.to_dict(), "rows": {name: len(rows) for name, rows in splits.items()}, "source_sha256": sha256_of(csv),
                   "split": {"test_size": TEST_SIZE, "val_size": VAL_SIZE, "random_state": RANDOM_STATE, "stratify_test": LABEL}}
    # Transform every split before touching the folder: bad rows in any split leave nothing behind.
    features = {name: pre.transform(rows, source=f"{csv} ({name} split)") for name, rows in splits.items()}
    files.remove(PREPROCESSING_FILE)
    for name, rows in splits.items():
        arrays = {f"X_{name}": features[name], f"y_{name}": rows[LABEL].to_numpy(dtype="int64")}
        files.write(npz_name(name), lambda tmp, arrays=arrays: _savez(tmp, arrays))
    files.write(TEST_ROWS_FILE, lambda tmp: splits["test"].to_csv(tmp, index=False))
    files.write_text(PREPROCESSING_FILE, json.dumps(description, indent=2) + "\n")
    return description


def _savez(path: Path, arrays: dict) -> None:
    with path.open("wb") as fh:  # given a name, np.savez would add ".npz" to the partial file's
        np.savez(fh, **arrays)


def load_preprocessing(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a number beyond Python's digit limit
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid JSON (nested too deeply)") from None
    Preprocessor.from_dict(data, source=str(path))  # validates the shape
    return data

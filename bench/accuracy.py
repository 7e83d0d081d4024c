"""Test accuracy of the default training over several seeds, beside two scikit-learn baselines,
and the cross-validated comparison that picks the default feature set.

Run: `python -m bench.accuracy [--seeds 5] [--folds 5] [--csv CSV]`

For each feature set (basic = the lesson's seven columns, rich = titles, family, cabin, port) the
lesson's split is prepared once; `titanic_lightning.training.train` then runs with entry.train's
defaults for each seed, and LogisticRegression and HistGradientBoosting are fitted on the same
train split. The table shows mean validation accuracy and mean/min/max test accuracy on the 179
held-out rows.

The 143-row validation split moves 0.7 % per passenger, too coarse to choose between feature sets,
so the choice is made by k-fold cross-validation over the 712 development rows (train + val; the
test rows are never touched): each fold fits its own preprocessing on its training part, trains
with the defaults, and is scored on its held-out part.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
from pathlib import Path

import numpy as np

from titanic_lightning.command import run_command


def _load(data: Path, split: str):
    with np.load(data / f"{split}_data.npz", allow_pickle=False) as npz:
        return npz[f"X_{split}"], npz[f"y_{split}"]


def train_mlp(data: Path, seed: int, work: Path, flags: list[str] = ()) -> dict:
    """The metrics of one training run with entry.train's defaults, changed by `flags` (its own flags)."""
    import dataclasses

    from titanic_lightning.config import parse_train_args
    from titanic_lightning.training.train import train

    cfg = dataclasses.replace(
        parse_train_args(list(flags)), train=str(data / "train_data.npz"), val=str(data / "val_data.npz"),
        test=str(data / "test_data.npz"), seed=seed, model_dir=str(work / f"model-{seed}"),
        output_dir=str(work / f"outputs-{seed}"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return train(cfg).metrics


def baselines(data: Path) -> dict[str, tuple[float, float]]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    (X, y), (Xv, yv), (Xt, yt) = (_load(data, s) for s in ("train", "val", "test"))
    scores = {}
    for name, model in (("LogisticRegression", LogisticRegression(max_iter=1000)),
                        ("HistGradientBoosting", HistGradientBoostingClassifier(random_state=0))):
        model.fit(X, y)
        scores[name] = (model.score(Xv, yv), model.score(Xt, yt))
    return scores


def cross_validate(csv: Path, feature_set: str, folds: int, work: Path) -> list[float]:
    import pandas as pd
    from sklearn.model_selection import StratifiedKFold

    from titanic_lightning.data.features import Preprocessor
    from titanic_lightning.data.prepare import LABEL, read_passengers, split_rows

    splits = split_rows(read_passengers(csv))
    development = pd.concat([splits["train"], splits["val"]])
    accuracies = []
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for i, (fit_idx, held_idx) in enumerate(kfold.split(development, development[LABEL])):
        fit_rows, held_rows = development.iloc[fit_idx], development.iloc[held_idx]
        pre = Preprocessor.fit(fit_rows, feature_set)
        data = work / f"cv-{feature_set}-{i}"
        data.mkdir(parents=True)
        for split, rows in (("train", fit_rows), ("val", held_rows)):
            np.savez(data / f"{split}_data.npz", **{f"X_{split}": pre.transform(rows),
                                                     f"y_{split}": rows[LABEL].to_numpy()})
        np.savez(data / "test_data.npz", X_test=pre.transform(held_rows), y_test=held_rows[LABEL].to_numpy())
        accuracies.append(train_mlp(data, 0, work / f"cv-{feature_set}-{i}-run")["val_acc"])
    return accuracies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--csv", default=None, help="Titanic CSV (default: $TITANIC_CSV, cache, download)")
    args = parser.parse_args(argv)

    import logging

    from lightning.pytorch.utilities import disable_possible_user_warnings

    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.data.features import FEATURE_SETS
    from titanic_lightning.data.prepare import prepare

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    disable_possible_user_warnings()
    csv = resolve_csv(args.csv)
    rows, cv = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for feature_set in FEATURE_SETS:
            data = Path(tmp) / feature_set
            prepare(csv, data, feature_set)
            runs = [train_mlp(data, seed, Path(tmp) / f"{feature_set}-runs") for seed in range(args.seeds)]
            test = [r["test_acc"] for r in runs]
            val = [r["val_acc"] for r in runs]
            rows.append((f"MLP (entry.train defaults), {args.seeds} seeds", feature_set, statistics.mean(val),
                         statistics.mean(test), min(test), max(test),
                         statistics.mean(r["best_epoch"] for r in runs)))
            for name, (val_acc, test_acc) in baselines(data).items():
                rows.append((name, feature_set, val_acc, test_acc, test_acc, test_acc, None))
            cv[feature_set] = cross_validate(csv, feature_set, args.folds, Path(tmp))
    print("| model | features | val acc (mean) | test acc mean | min | max | best epoch (mean) |")
    print("|---|---|---|---|---|---|---|")
    for name, fs, val, mean, lo, hi, best in rows:
        best_text = f"{best:.1f}" if best is not None else "–"
        print(f"| {name} | {fs} | {val:.4f} | {mean:.4f} | {lo:.4f} | {hi:.4f} | {best_text} |")
    print()
    print(f"| features | {args.folds}-fold CV accuracy, 712 development rows (mean) | per fold |")
    print("|---|---|---|")
    for feature_set, accuracies in cv.items():
        folds = " ".join(f"{a:.3f}" for a in accuracies)
        print(f"| {feature_set} | {statistics.mean(accuracies):.4f} | {folds} |")


if __name__ == "__main__":
    run_command(main)  # a missing CSV or another user mistake: one line, exit 2

"""What a local hyperparameter search finds against the defaults, on the lesson's split.

Run: `python -m bench.tuning [--trials 20] [--parallel 2] [--seeds 5] [--csv CSV]`

The lesson's split is prepared once (entry.prepare's defaults). `launch/tune.py --local` then
searches the default space for `--trials` trials, choosing by validation loss. The best trial's
hyperparameters and entry.train's defaults are each trained with `--seeds` seeds (the search ran
one), and the table gives mean validation loss and accuracy and mean/min/max test accuracy on the 179
held-out rows. Nothing is chosen by test accuracy: it is only reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.accuracy import train_mlp
from titanic_lightning.command import run_command

TUNE = Path(__file__).resolve().parents[1] / "launch" / "tune.py"


def search(data: Path, work: Path, trials: int, parallel: int) -> dict:
    """The tuning summary (the last line `launch/tune.py` prints)."""
    command = [sys.executable, str(TUNE), "--local", "--data", str(data), "--trials", str(trials),
               "--parallel", str(parallel), "--out", str(work / "tuning"), "--runs-dir", str(work / "runs")]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"tune.py failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--csv", default=None, help="Titanic CSV (default: $TITANIC_CSV, cache, download)")
    args = parser.parse_args(argv)

    import logging

    from lightning.pytorch.utilities import disable_possible_user_warnings

    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.data.prepare import prepare

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    disable_possible_user_warnings()
    csv = resolve_csv(args.csv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        prepare(csv, data, "rich")
        started = time.monotonic()
        result = search(data, work, args.trials, args.parallel)
        search_s = time.monotonic() - started
        best = result["best"]
        flags = [part for key, value in best["hyperparameters"].items() for part in (f"--{key}", value)]
        rows = []
        for name, chosen in (("entry.train defaults", []), (f"best of {args.trials} trials", flags)):
            runs = [train_mlp(data, seed, work / name.replace(" ", "-"), chosen) for seed in range(args.seeds)]
            val, test = [r["val_acc"] for r in runs], [r["test_acc"] for r in runs]
            rows.append((name, " ".join(chosen) or "–", statistics.mean(r["val_loss"] for r in runs), statistics.mean(val),
                         statistics.mean(test), min(test), max(test), statistics.mean(r["best_epoch"] for r in runs)))
    counts = {s: sum(t["status"] == s for t in result["trials"]) for s in ("Completed", "Pruned", "Failed")}
    print(f"search: {args.trials} trials ({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}), "
          f"{args.parallel} at a time, {search_s:.0f} s; best trial {best['trial']}: val_loss {best['val_loss']:.4f}, "
          f"val_acc {best['val_acc']:.4f} (seed 42)")
    print()
    print(f"| configuration | flags | val loss (mean of {args.seeds} seeds) | val acc (mean) | test acc mean | min | max "
          "| best epoch (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, flags_text, loss, val, mean, lo, hi, best_epoch in rows:
        print(f"| {name} | {flags_text} | {loss:.4f} | {val:.4f} | {mean:.4f} | {lo:.4f} | {hi:.4f} | {best_epoch:.1f} |")


if __name__ == "__main__":
    run_command(main)

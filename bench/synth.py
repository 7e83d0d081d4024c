"""Synthetic Titanic-shaped channels for throughput runs: 7 standardised features, a 0/1 label
with a learnable (logistic) signal, written as train/val/test npz in the lesson's key layout.

Run: `python -m bench.synth --rows 2000000 --out /tmp/synth-2m`
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FEATURES = 7
VAL_ROWS = 20_000
CHUNK = 1_000_000


def make(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    weights = np.random.default_rng(1234).normal(size=FEATURES).astype(np.float32)  # one signal for all splits
    rng = np.random.default_rng(seed)
    X = np.empty((rows, FEATURES), dtype=np.float32)
    y = np.empty(rows, dtype=np.int8)
    for start in range(0, rows, CHUNK):  # chunked: peak memory stays near the arrays themselves
        stop = min(start + CHUNK, rows)
        X[start:stop] = rng.standard_normal((stop - start, FEATURES), dtype=np.float32)
        logits = X[start:stop] @ weights
        y[start:stop] = rng.random(stop - start) < 1 / (1 + np.exp(-logits))
    return X, y


def write(rows: int, out: Path) -> Path:
    """Write out/{train,val,test}_data.npz unless they already exist for this size."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "test_data.npz").is_file():
        return out
    for split, n, seed in (("train", rows, 0), ("val", VAL_ROWS, 1), ("test", VAL_ROWS, 2)):
        X, y = make(n, seed)
        np.savez(out / f"{split}_data.npz", **{f"X_{split}": X, f"y_{split}": y})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(write(args.rows, args.out))


if __name__ == "__main__":
    main()

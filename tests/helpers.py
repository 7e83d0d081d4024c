"""Helpers shared by the tests: the real CSV's location, synthetic channels, and a runner for
`python -m entry.*` commands with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def find_titanic_csv() -> Path | None:
    candidates = [os.environ.get("TITANIC_CSV"), REPO.parent / "shared" / "data" / "titanic.csv"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def write_channel(path: Path, split: str, rows: int = 40, features: int = 5, seed: int = 0, **overrides) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype("float32")
    y = (X[:, 0] + 0.3 * rng.normal(size=rows) > 0).astype("int64")
    arrays = {f"X_{split}": X, f"y_{split}": y}
    arrays.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment minus anything SageMaker/torchrun-like, plus `extra`."""
    drop = ("SM_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_", "NODE_RANK", "TORCHELASTIC")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_entry(module: str, *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `python -m entry.<module> args...` in `cwd`; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", f"entry.{module}", *args],
        cwd=cwd, env=env if env is not None else clean_env(), capture_output=True, text=True, timeout=timeout,
    )

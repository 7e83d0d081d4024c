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


def npz_declaring(path: Path, split: str, rows: int, claim_in_zip: bool = False) -> Path:
    """A small npz whose array headers declare `rows` rows (7 float32 features) over 4 KB of data.

    With `claim_in_zip`, the archive's own record of the features' uncompressed size claims them too,
    as a file crafted to get past a size check would.
    """
    import io
    import struct
    import zipfile

    def npy(shape: tuple[int, ...], descr: str, data: bytes) -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    features = npy((rows, 7), "<f4", b"\0" * 4096)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"X_{split}.npy", features)
        archive.writestr(f"y_{split}.npy", npy((rows,), "<i8", b"\0" * 64))
    if claim_in_zip:
        claimed = len(features) - 4096 + rows * 7 * 4
        data = bytearray(path.read_bytes())
        # The first member's uncompressed size: its local header (offset 22) and central directory entry (24).
        struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, claimed)
        struct.pack_into("<I", data, data.find(b"PK\x01\x02") + 24, claimed)
        path.write_bytes(bytes(data))
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


def invoke(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """A command's `main` run in-process under `run_command`, as `python -m entry.*` runs it:
    (exit code, stdout, stderr)."""
    import pytest

    from titanic_lightning.command import run_command

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_command(main, argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err

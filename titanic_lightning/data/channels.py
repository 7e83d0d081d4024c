"""npz channels, read and checked: an `.npz` file, or a directory of them (a SageMaker channel) read
in name order. Keys are `X_<split>`/`y_<split>` or plain `X`/`y`; each error names the file.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np

from titanic_lightning.data.csv_source import sha256_of
from titanic_lightning.errors import UsageError

# Deflate cannot expand a stream more than about 1032-fold: a member claiming more is not believed.
MAX_DEFLATE_RATIO = 1032


def channel_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            raise UsageError(f"{path}: channel directory holds no .npz file")
        return files
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    return [path]


def _pick(keys: list[str], split: str, kind: str, path: Path) -> str:
    for key in (f"{kind}_{split}", kind):
        if key in keys:
            return key
    raise UsageError(f"{path}: missing key {kind}_{split} (or {kind}); it has {', '.join(keys) or 'no arrays'}")


def _array_header(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape `key.npy` declares, checked against the bytes the file can hold: np.load allocates the
    declared shape before reading, so a small file claiming 10**12 rows would end in MemoryError."""
    info = archive.getinfo(f"{key}.npy")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UsageError(f"{path}: array {key} is compressed with zip method {info.compress_type}; numpy's npz "
                         "files are stored or deflated")
    with archive.open(info) as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        header_size = fh.tell()
    if dtype.hasobject:
        raise UsageError(f"{path}: holds object (pickled) arrays, which are not loaded")
    # The member's own uncompressed size is believed only as far as its bytes on disk could expand.
    on_disk = min(info.compress_size, path.stat().st_size)
    held = min(info.file_size, on_disk * (MAX_DEFLATE_RATIO if info.compress_type == zipfile.ZIP_DEFLATED else 1)) - header_size
    declared = math.prod(shape) * dtype.itemsize
    if any(n < 0 for n in shape) or declared > held:
        raise UsageError(f"{path}: array {key} declares shape {shape} of {dtype} ({declared} bytes) but the file holds at most "
                         f"{max(held, 0)} bytes of it; the file is damaged or not written by numpy")
    return shape, dtype


def check_headers(path: Path, split: str) -> tuple[str, str, tuple[int, ...]]:
    """(features key, labels key, feature shape) of an npz file, its arrays checked before any is loaded."""
    try:
        with zipfile.ZipFile(path) as archive:
            keys = [n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")]
            x_key, y_key = _pick(keys, split, "X", path), _pick(keys, split, "y", path)
            (shape, x_type), (y_shape, y_type) = _array_header(archive, x_key, path), _array_header(archive, y_key, path)
    except UsageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise UsageError(f"{path}: not a readable npz file ({' '.join(str(exc).split())[:200]})") from None
    if x_type.kind not in "biuf" or y_type.kind not in "biuf":
        raise UsageError(f"{path}: features and labels must be numeric (got {x_type} and {y_type})")
    if len(shape) != 2:
        raise UsageError(f"{path}: features must be 2-D (rows x features), got shape {shape}")
    if shape[1] == 0:
        raise UsageError(f"{path}: features have zero columns (shape {shape})")
    if len(y_shape) != 1:
        raise UsageError(f"{path}: labels must be 1-D, got shape {y_shape}")
    if shape[0] != y_shape[0]:
        raise UsageError(f"{path}: {shape[0]} feature rows but {y_shape[0]} labels")
    if shape[0] == 0:
        raise UsageError(f"{path}: has zero rows")
    return x_key, y_key, shape


def read_npz(path: Path, split: str, headers: tuple[str, str, tuple[int, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load and check one npz file (`headers`: its `check_headers`, if read); both arrays come back float32."""
    x_key, y_key, _ = headers or check_headers(path, split)
    try:
        with np.load(path, allow_pickle=False) as npz, np.errstate(over="ignore"):  # overflow is refused below
            X, y = npz[x_key].astype(np.float32, copy=False), npz[y_key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not a readable npz file ({exc})") from None
    if not np.isfinite(X).all():
        raise UsageError(f"{path}: features contain NaN or infinite values, or values beyond float32's range (3.4e38)")
    if not np.isin(y, (0, 1)).all():
        raise UsageError(f"{path}: labels must be 0 or 1")
    return X, y.astype(np.float32, copy=False)


def load_channel(path: Path, split: str, files: list[Path] | None = None,
                 first_headers: tuple[str, str, tuple[int, ...]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load a channel; `files` (its `channel_files`) and `first_headers` (its first file's) when already read."""
    files = channel_files(path) if files is None else files
    parts = [read_npz(f, split, first_headers if i == 0 else None) for i, f in enumerate(files)]
    widths = {X.shape[1] for X, _ in parts}
    if len(widths) > 1:
        raise UsageError(f"{path}: its files have different feature counts {sorted(widths)}")
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([X for X, _ in parts]), np.concatenate([y for _, y in parts])


def num_features(path: Path, split: str) -> int:
    """Feature count read from the first file's array header, without loading the data."""
    return int(check_headers(channel_files(path)[0], split)[2][1])


def training_data_sha256(train: Path, val: Path, files: dict[str, list[Path]] | None = None) -> str:
    """One sha256 over the train and val channels' contents (not paths; `files`: when already listed)."""
    digest = hashlib.sha256()
    for split, path in (("train", train), ("val", val)):
        for file in (files or {}).get(split) or channel_files(path):
            digest.update(f"{split}:{sha256_of(file)}\n".encode())
    return digest.hexdigest()

"""What each command writes, and the checks its output paths pass before any work starts.

A command writes only files of its own names into the folders it is given. It replaces an
existing file of such a name only when the file is recognisably one this project wrote (each
recogniser below reads a marker the writer puts in); anything else there stops the command before
it starts, with one line naming the file. It never deletes, moves or empties anything else, so an
output folder may be `.`, a data folder, or a folder shared with the user's own files.

The checks read the file system only: nothing is created until the command has work to write.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from titanic_lightning.atomic import partial_path
from titanic_lightning.errors import UsageError

PROJECT = "titanic-lightning"
NPZ_MARKER = "titanic_lightning"  # an array in every npz channel `entry.prepare` writes, holding its format
CURVES_TITLE = "titanic-lightning learning curves"  # curves.png's PNG Title
_MAX_SNIFF = 64 << 20  # recognisers read at most this much of a file

Recogniser = Callable[[Path], bool]


def _head(path: Path, size: int = 4096) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _text_head(path: Path, size: int = 4096) -> str:
    return _head(path, size).decode("utf-8", "replace")


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def is_model_file(path: Path) -> bool:
    """A model.pt written by `artifacts.write_model_dir`: a torch zip whose pickle holds our format."""
    from titanic_lightning.artifacts import MODEL_FORMAT

    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            return len(pickles) == 1 and MODEL_FORMAT.encode() in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, KeyError):
        return False


def is_metrics_file(path: Path) -> bool:
    data = _json(path)
    return isinstance(data, dict) and "epochs_run" in data and "best_epoch" in data


def is_preprocessing_file(path: Path) -> bool:
    data = _json(path)
    return isinstance(data, dict) and {"feature_set", "feature_names", "scaler"} <= data.keys()


def is_channel_file(path: Path) -> bool:
    """An npz channel `entry.prepare` wrote: it carries the project's marker array."""
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{NPZ_MARKER}.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def is_passenger_rows(path: Path) -> bool:
    header = _text_head(path, 1024).splitlines()[:1]
    return bool(header) and {"PassengerId", "Survived"} <= set(header[0].split(","))


def is_predictions_file(path: Path) -> bool:
    return _text_head(path, 256).startswith("PassengerId,probability,prediction")


def is_export_file(path: Path) -> bool:
    """A TorchScript or ONNX file from `entry.export`: its contract JSON is stored verbatim."""
    if path.stat().st_size > _MAX_SNIFF:
        return False
    return b'"input_columns": ["Pclass"' in path.read_bytes()


def is_curves_png(path: Path) -> bool:
    return CURVES_TITLE.encode() in _head(path, 8192)


def is_serving_code(path: Path) -> bool:
    """A file of `code/`: the handler and requirements name the project in their first lines; the
    module copies sit in `code/titanic_lightning/`, a folder named after this project's package."""
    if path.parent.name == "titanic_lightning" and path.parent.parent.name == "code":
        return True
    return PROJECT in _text_head(path, 512)


def is_training_log(path: Path) -> bool:
    """Lightning's csv/metrics.csv or an hparams.yaml of this project's runs."""
    text = _text_head(path, 4096)
    if path.suffix == ".csv":
        header = set(text.splitlines()[0].split(",")) if text else set()
        return {"epoch", "step"} <= header
    return any(line.startswith("hidden_sizes:") for line in text.splitlines())


def _describe(path: Path) -> str:
    return "a folder" if path.is_dir() and not path.is_symlink() else "a file"


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_folder(path: Path, flag: str) -> Path:
    """`path` is a folder, or can be created as one, and a file can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: cannot be created, {existing} is a file")
    probe = partial_path(existing / ".write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        what = "written" if existing == Path(os.path.abspath(path)) else f"created ({existing} is not writable)"
        raise UsageError(f"{flag} {path}: cannot be {what}: {exc.strerror or exc}") from None
    return path


def check_owned(folder: Path, owned: Mapping[str, Recogniser], flag: str) -> None:
    """Each name in `owned` under `folder` is absent, or a file its recogniser accepts.

    A name with a slash also needs its folders to be folders (`code/inference.py`).
    """
    folder = Path(folder)
    for name, recognise in owned.items():
        path = folder / name
        for parent in reversed(path.relative_to(folder).parents[:-1]):
            if (folder / parent).exists() and not (folder / parent).is_dir():
                raise UsageError(f"{flag} {folder}: {folder / parent} is a file where this command writes a folder")
        problem = _not_ours(path, recognise)
        if problem:
            raise UsageError(f"{flag} {folder}: {path} {problem}; move it away or choose another {flag}")


def _not_ours(path: Path, recognise: Recogniser) -> str | None:
    """Why the command may not replace `path`, or None when it may (absent, or written by us)."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_file():
        return f"is {_describe(path)} this command would replace"
    try:
        ours = recognise(path)
    except OSError:
        ours = False
    return None if ours else f"exists and was not written by {PROJECT}"


def check_output_file(path: Path, flag: str, recognise: Recogniser, inputs: Iterable[tuple[str, Path]] = ()) -> Path:
    """An output file: its folder exists and is writable, it is no input, and it is absent or ours."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: folder {parent} does not exist")
    check_folder(parent, flag)
    for input_flag, source in inputs:
        if same_file(path, source):
            raise UsageError(f"{flag} {path}: is the same file as {input_flag} {source}")
    problem = _not_ours(path, recognise)
    if problem:
        raise UsageError(f"{flag} {path}: {problem}; move it away or choose another {flag}")
    return path


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)

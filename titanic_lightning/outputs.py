"""What each command writes, and the checks its output paths pass before any work starts.

A command writes only files of its own names into the folders it is given, and it replaces an
existing file of such a name only when that file is byte for byte one this project wrote there.
Each output folder keeps the record of what was written into it: `.titanic-lightning-files.json`,
the sha256 of every file by its name in the folder, and which command wrote it (its role: train,
prepare, predict, export), so that `predict --out model/metrics.json` cannot replace a file of
training's. A file the record does not vouch for (the
user's own, or one the user edited since) stops the command before it starts, with one line
naming the file; nothing else in the folder is ever deleted, moved or emptied, so an output folder
may be `.`, a data folder, or a folder shared with the user's own files.

Files that a library writes in place (Lightning's CSV and TensorBoard logs) are claimed by name
before the library writes them: the record then vouches for whatever the library left there.

The checks read the file system only: nothing is created until the command has work to write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from titanic_lightning.atomic import atomic_output, folder_lock, partial_path, remove_stale_partials, write_text
from titanic_lightning.contracts import PROJECT
from titanic_lightning.csv_source import sha256_of
from titanic_lightning.errors import UsageError

RECORD = f".{PROJECT}-files.json"
RECORD_FORMAT = "titanic-lightning/files-1"
ANY = "*"  # a claim: whatever the library that writes this name leaves there


class Record:
    """The record of the files this project wrote into one folder (`RECORD`)."""

    def __init__(self, folder: Path, files: dict[str, list[str]], roles: dict[str, str]):
        self.folder, self.files, self.roles = Path(folder), files, roles

    @classmethod
    def read(cls, folder: Path, flag: str) -> Record:
        path = Path(folder) / RECORD
        if not os.path.lexists(path):
            return cls(folder, {}, {})
        data = None
        if path.is_file() and not path.is_symlink():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                data = None
        ours = isinstance(data, dict) and data.get("format") == RECORD_FORMAT
        files, roles = (data.get("files"), data.get("roles")) if ours else (None, None)
        if not (isinstance(files, dict) and isinstance(roles, dict)
                and all(isinstance(v, list) and all(isinstance(h, str) for h in v) for v in files.values())
                and all(isinstance(v, str) for v in roles.values())):
            raise UsageError(f"{flag} {folder}: {path} is not {PROJECT}'s record of its files; move it away or "
                             f"choose another {flag}")
        return cls(folder, files, roles)

    def vouches_for(self, name: str, path: Path, role: str) -> bool:
        """Whether `path` is the file `role` (a command) wrote as `name`, byte for byte or by a claim."""
        hashes = self.files.get(name) or []
        if self.roles.get(name) != role:
            return False
        return ANY in hashes or (bool(hashes) and sha256_of(path) in hashes)

    def _save(self) -> None:
        write_text(self.folder / RECORD, json.dumps({"format": RECORD_FORMAT, "files": self.files, "roles": self.roles},
                                                    indent=1, sort_keys=True) + "\n")

    def expect(self, name: str, sha256: str, role: str) -> None:
        """Vouch for `sha256` at `name` as well as what is there now (the new file is renamed in next)."""
        self.files[name] = [h for h in self.files.get(name, []) if h != sha256] + [sha256]
        self.roles[name] = role
        self._save()

    def settle(self, name: str, hashes: list[str], role: str) -> None:
        self.files[name], self.roles[name] = hashes, role
        self._save()

    def forget(self, name: str) -> None:
        if self.files.pop(name, None) is not None or self.roles.pop(name, None) is not None:
            self._save()


def _describe(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link"
    return "a folder" if path.is_dir() else "not a regular file"


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _probe(folder: Path, flag: str, shown: Path) -> None:
    """Create and remove a file in `folder`: the one test of writability that root cannot pass by."""
    probe = partial_path(folder / ".write-check")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        what = "written" if Path(os.path.abspath(shown)) == folder else f"created ({folder} is not writable)"
        raise UsageError(f"{flag} {shown}: cannot be {what}: {exc.strerror or exc}") from None


def check_folder(path: Path, flag: str) -> Path:
    """`path` is a folder, or can be created as one, and a file can be written in it."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{flag} {path}: is a symbolic link to nothing")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = "a symbolic link to nothing" if existing.is_symlink() and not existing.exists() else "a file"
        raise UsageError(f"{flag} {path}: cannot be created, {existing} is {what}")
    _probe(existing, flag, path)
    return path


def check_owned(folder: Path, names: Iterable[str], flag: str, role: str, record: Record | None = None) -> None:
    """Each of `names` (relative to `folder`) is absent, or a regular file the folder's record vouches
    for as written by `role`.

    A name's folders (`code/` of `code/inference.py`) must be folders, and writable where they exist.
    """
    folder = Path(folder)
    record = record if record is not None else Record.read(folder, flag)
    probed: set[Path] = set()
    for name in names:
        path = folder / name
        for parent in reversed(Path(name).parents[:-1]):
            sub = folder / parent
            if os.path.lexists(sub) and (sub.is_symlink() or not sub.is_dir()):
                raise UsageError(f"{flag} {folder}: {sub} is {_describe(sub)} where this command writes a folder")
            if sub.is_dir() and sub not in probed:
                probed.add(sub)
                _probe(Path(os.path.abspath(sub)), flag, sub)
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not path.is_file():
            problem = f"is {_describe(path)}, which this command would replace"
        elif not record.vouches_for(name, path, role):
            problem = f"exists and was not written by {PROJECT} (or was changed since)"
        else:
            continue
        raise UsageError(f"{flag} {folder}: {path} {problem}; move it away or choose another {flag}")


def check_output_file(path: Path, flag: str, role: str, inputs: Iterable[tuple[str, Path]] = ()) -> Path:
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
    try:
        check_owned(parent, [path.name], flag, role)
    except UsageError as exc:
        raise UsageError(str(exc).replace(f"{flag} {parent}: {path} ", f"{flag} {path}: ", 1)) from None
    return path


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


class Writer:
    """Writes files of a folder whole (partial name, then rename) and keeps its record."""

    def __init__(self, folder: Path, record: Record, role: str):
        self.folder, self.record, self.role = folder, record, role

    def write(self, name: str, fill: Callable[[Path], object]) -> Path:
        """`fill(tmp)` writes the content to a partial file that then becomes `folder/name`."""
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(target.parent)
        with atomic_output(target) as tmp:
            fill(tmp)
            sha256 = sha256_of(tmp)
            self.record.expect(name, sha256, self.role)  # before the rename: a kill between the two leaves it ours
        self.record.settle(name, [sha256], self.role)
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def remove(self, name: str) -> None:
        """Remove a file this command writes (checked as ours when the writer opened)."""
        (self.folder / name).unlink(missing_ok=True)
        self.record.forget(name)

    def claim(self, name: str) -> None:
        """Vouch for whatever a library is about to write at `name`, until `adopt` records what it wrote."""
        self.record.settle(name, [ANY], self.role)

    def adopt(self, name: str) -> None:
        """Record what a library wrote at `name` (claimed before), byte for byte from now on."""
        path = self.folder / name
        if path.is_file() and not path.is_symlink():
            self.record.settle(name, [sha256_of(path)], self.role)
        else:
            self.record.forget(name)


@contextmanager
def writing(folder: Path, names: Iterable[str], flag: str, role: str) -> Iterator[Writer]:
    """Lock `folder` (created if need be), check `names` once more, and yield its `Writer` for `role`.

    The check is repeated under the lock because the folder may have changed since the check made
    before the command's work (a user's file put there meanwhile, or another run).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        record = Record.read(folder, flag)
        check_owned(folder, names, flag, role, record)
        remove_stale_partials(folder)
        yield Writer(folder, record, role)

"""Which folders a command may write, and which files in them it may replace.

A command locks each folder it writes for its whole run (`writing`, through `locks`). In a folder it
writes, a command replaces only files of its own names that this project wrote there, as
`.titanic-lightning-files` records them (by name: the role that wrote the file, its size and
modification time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from titanic_lightning.contracts import PROJECT
from titanic_lightning.errors import UsageError
from titanic_lightning.io.atomic import PARTIAL_SUFFIX, atomic_output, partial_path, remove_stale_partials, write_text
from titanic_lightning.io.locks import holding

RECORD = f".{PROJECT}-files"  # JSON; no .json suffix, so globs of runs/*.json do not match it
RECORD_FORMAT = "titanic-lightning/folder-1"
# The command that writes as each role, as a user would type it.
_COMMANDS = {"train": "python -m entry.train", "prepare": "python -m entry.prepare",
             "predict": "python -m entry.predict", "export": "python -m entry.export",
             "record": "launch/ (a run record)", "compare": "launch/submit.py --compare", "tune": "launch/tune.py"}
# Room a folder's path leaves for what the commands write below it: the serving code's partial files
# (code/titanic_lightning/serving/.NAME.PID-TOKEN.partial), then TensorBoard's event files (named by host).
PATH_ROOM = 256


def read_record(folder: Path, flag: str) -> dict:
    path = folder / RECORD
    if not os.path.lexists(path):
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, RecursionError):
        data = None
    files = data.get("files") if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None
    if not (isinstance(files, dict) and all(isinstance(v, dict) for v in files.values())):
        raise UsageError(f"{flag} {folder}: {path} is not {PROJECT}'s record of its files; move it away or "
                         f"choose another {flag}")
    return files


def save_record(folder: Path, files: dict) -> None:
    write_text(folder / RECORD, json.dumps({"format": RECORD_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")


def file_stamp(path: Path) -> list[int] | None:
    if path.is_symlink() or not path.is_file():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def vouches(entry: dict | None, path: Path) -> bool:
    """Whether the record's `entry` says `path` is the file a command of this project wrote (or is writing) there."""
    return bool(entry) and ("pid" in entry or entry.get("stamp") == file_stamp(path))


def owned(folder: Path, flag: str) -> list[Path]:
    """The files in `folder` that its record says this project wrote, as they are now."""
    folder = Path(folder)
    return [folder / name for name, entry in read_record(folder, flag).items()
            if file_stamp(folder / name) and vouches(entry, folder / name)]


def _describe(path: Path) -> str:
    return "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"


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
    existing = _nearest_existing(path)
    _check_length(path, existing, flag)  # first: a name too long fails every other check with an OSError
    if path.is_symlink() and not path.exists():
        raise UsageError(f"{flag} {path}: is a symbolic link to nothing")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a folder")
    if not existing.is_dir():
        what = "a symbolic link to nothing" if existing.is_symlink() and not existing.exists() else "a file"
        raise UsageError(f"{flag} {path}: cannot be created, {existing} is {what}")
    _probe(existing, flag, path)
    return path


def _check_length(path: Path, existing: Path, flag: str, file: bool = False) -> None:
    """Refuse, before any work, a folder (or a `file`) whose files would pass the system's path
    limits when they are written at the end (Lightning's checkpoints are written by absolute path)."""
    folder = existing if existing.is_dir() else existing.parent
    name_max, path_max = os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    # A file is first written under its partial name (`atomic.partial_path`), 32 bytes longer at most.
    for part, room in [(part, 0) for part in path.parts[:-1]] + [(path.name, 32 if file else 0)]:
        if len(os.fsencode(part)) + room > name_max:
            raise UsageError(f"{flag} {path}: a name of {len(os.fsencode(part))} bytes; "
                             f"this file system allows {name_max - room}")
    length = len(os.fsencode(os.path.abspath(path)))
    if length + PATH_ROOM > path_max:
        raise UsageError(f"{flag} {path}: {length} bytes as an absolute path; the files written below it would "
                         f"pass the system's limit of {path_max}, so at most {path_max - PATH_ROOM}")


def check_owned(folder: Path, names: Iterable[str], flag: str, role: str, record: dict | None = None) -> None:
    """Each of `names` (relative to `folder`) is absent, or a regular file the folder's record says `role`
    wrote; its folders (`code/` of `code/inference.py`) are folders, writable where they exist."""
    folder = Path(folder)
    record = read_record(folder, flag) if record is None else record
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
        entry = record.get(name) or {}
        if path.is_symlink() or not path.is_file():
            problem = f"is {_describe(path)}, which this command would replace"
        elif not vouches(entry, path):
            problem = f"exists and was not written by {PROJECT} (or was changed since)"
        elif entry["role"] != role:  # another command's: replacing it would leave that command's folder inconsistent
            problem = (f"was written by {_COMMANDS.get(entry['role'], str(entry['role']))}, which owns it; "
                       "this command replaces only its own files")
        else:
            continue
        raise UsageError(f"{flag} {folder}: {path} {problem}; move it away or choose another {flag}")


def check_output_file(path: Path, flag: str, role: str, inputs: Iterable[tuple[str, Path]] = ()) -> Path:
    """An output file: its folder exists and is writable, it is no input, and it is absent or ours."""
    path = Path(path)
    _check_length(path, _nearest_existing(path), flag, file=True)
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
    """Writes files of a held folder whole: under a partial name, then renamed into place."""

    def __init__(self, folder: Path):
        self.folder, self.written = folder, set()

    def write(self, name: str, fill: Callable[[Path], object]) -> Path:
        """`fill(tmp)` writes the content to a partial file that then becomes `folder/name`."""
        target = self.folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(target) as tmp:
            fill(tmp)
        self.written.add(name)
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
        self.written.add(name)


def _files_in(folder: Path, subfolders: Iterable[str]) -> set[str]:
    """The regular files directly in `folder`'s `subfolders`, by their names relative to `folder`."""
    found = set()
    for sub in subfolders:
        try:
            entries = list(os.scandir(folder / sub))
        except OSError:
            continue
        found.update(f"{sub}/{e.name}" for e in entries
                     if e.is_file(follow_symlinks=False) and not e.name.endswith(PARTIAL_SUFFIX))
    return found


@contextmanager
def writing(folder: Path, names: Iterable[str], flag: str, role: str, in_place: Iterable[str] = (),
            wait_s: float = 0, new_in: Iterable[str] = (), rewritten: Iterable[str] = ()) -> Iterator[Writer]:
    """Lock `folder` (created if need be) for `role`, check `names` under the lock, and yield its `Writer`.
    Meanwhile the record marks `names` as this process's, so that what a library writes in place or a killed
    run leaves stays ours. At the end each name written, each of `in_place` (written by a library), each
    file new in the sub-folders `new_in`, and each of `rewritten` (unchecked names a library may write, as
    Lightning does last.ckpt) that changed meanwhile is recorded as it is; other names keep what the record said."""
    folder, names, in_place = Path(folder), list(names), set(in_place)
    found_before = _files_in(folder, new_in)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with holding(folder, flag, exclusive=True, wait_s=wait_s):
        before = read_record(folder, flag)
        check_owned(folder, names, flag, role, before)
        for sub in {(folder / name).parent for name in names}:
            remove_stale_partials(sub)
        if names:
            save_record(folder, {**before, **{name: {"role": role, "pid": os.getpid()} for name in names}})
        stamps = {name: file_stamp(folder / name) for name in rewritten if name not in names}
        writer = Writer(folder)
        try:
            yield writer
        finally:
            changed = [name for name, stamp in stamps.items() if file_stamp(folder / name) not in (None, stamp)]
            if names or changed:
                files, new = read_record(folder, flag), _files_in(folder, new_in) - found_before - set(names)
                for name in [*names, *new, *changed]:
                    stamp = file_stamp(folder / name)
                    if name in writer.written or name in in_place or name in new or name in changed:
                        files[name] = {"role": role, "stamp": stamp}
                    elif files.get(name, {}).get("pid") == os.getpid():
                        files[name] = before.get(name) if stamp else None
                files = {name: entry for name, entry in files.items() if entry and entry.get("stamp", 1)}
                if files:
                    save_record(folder, files)
                else:
                    (folder / RECORD).unlink(missing_ok=True)
            if created and not any(folder.iterdir()):  # nothing is left in the folder this made
                folder.rmdir()

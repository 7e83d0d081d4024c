"""Which folders a command may write, and the locks that keep two commands out of each other's way.

A command takes an exclusive lock on each folder it writes, and a shared one on each it reads, for
its whole run (`writing`, `reading`); a folder held by another command is refused at once, before
any work, in one line naming the folder and the holder. The lock is `flock` on the folder's own
descriptor: it needs no file (so a read-only channel folder can be locked too), and the kernel
drops it when its process ends, however it ends.

In a folder it writes, a command replaces only files of its own names that this project wrote
there. `.titanic-lightning-files` in the folder says which: by each name, the command that wrote it
(train, prepare, ...) and the file's size and modification time when that command ended. A file
that does not match (the user's own, or one edited since) stops the command before any work.
While a command holds the folder its names are marked as its own, so that the files Lightning
writes in place (the CSV and TensorBoard logs) and a run killed by SIGKILL stay this project's:
the next run replaces what such a run left at its names.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from titanic_lightning.contracts import PROJECT
from titanic_lightning.errors import UsageError
from titanic_lightning.io.atomic import PARTIAL_SUFFIX, atomic_output, partial_path, remove_stale_partials, write_text

RECORD = f".{PROJECT}-files"  # JSON; no .json suffix, so globs of runs/*.json do not match it
RECORD_FORMAT = "titanic-lightning/folder-1"

_held: dict[tuple[int, int], list] = {}  # this process's locks by folder: [descriptor, count, exclusive]


class Busy(UsageError):
    """The folder is locked by another command."""


def _holders(fd: int) -> str:
    """Who else holds a lock on the folder open as `fd`, from /proc/locks: 'pid N (command line)'."""
    st = os.fstat(fd)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        locks = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    except OSError:
        locks = []
    found = []
    for pid in {p[4] for p in locks if len(p) > 5 and p[1] == "FLOCK" and p[5] == where and p[4] != str(os.getpid())}:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            command = "?"
        found.append(f"pid {pid} ({command})")
    return ", ".join(sorted(found)) or "another process"


def _lock(folder: Path, flag: str, exclusive: bool, wait_s: float = 0) -> tuple[int, int]:
    """Lock `folder` for this process (again, if it holds it already); return its key."""
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino)
    fd, count, was_exclusive = _held.get(key) or (os.open(folder, os.O_RDONLY | os.O_DIRECTORY), 0, False)
    deadline = time.monotonic() + wait_s
    while not count or (exclusive and not was_exclusive):
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            holder = _holders(fd)
            if not count:
                os.close(fd)
            raise Busy(f"{flag} {folder}: is in use by {holder}; wait until it ends or choose another {flag}") from None
    _held[key] = [fd, count + 1, exclusive or was_exclusive]
    return key


def _unlock(key: tuple[int, int]) -> None:
    held = _held[key]
    held[1] -= 1
    if not held[1]:
        del _held[key]
        os.close(held[0])  # closing the descriptor releases the lock


@contextmanager
def reading(folder: Path, flag: str) -> Iterator[None]:
    """A shared lock on `folder` (if it exists) while it is read: no command writes it meanwhile."""
    key = _lock(Path(folder), flag, exclusive=False) if Path(folder).is_dir() else None
    try:
        yield
    finally:
        if key:
            _unlock(key)


def _read_record(folder: Path, flag: str) -> dict:
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


def _save_record(folder: Path, files: dict) -> None:
    write_text(folder / RECORD, json.dumps({"format": RECORD_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")


def _stamp(path: Path) -> list[int] | None:
    if path.is_symlink() or not path.is_file():
        return None
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _vouches(entry: dict | None, path: Path, role: str) -> bool:
    """Whether the record's `entry` says `path` is the file `role` wrote (or is writing) there."""
    return bool(entry) and entry.get("role") == role and ("pid" in entry or entry.get("stamp") == _stamp(path))


def owned(folder: Path, flag: str) -> list[Path]:
    """The files in `folder` that its record says this project wrote, as they are now."""
    folder = Path(folder)
    return [folder / name for name, entry in _read_record(folder, flag).items()
            if _stamp(folder / name) and _vouches(entry, folder / name, entry.get("role"))]


_COMMANDS = {"train": "python -m entry.train", "prepare": "python -m entry.prepare",
             "predict": "python -m entry.predict", "export": "python -m entry.export",
             "record": "launch/ (a run record)", "compare": "launch/submit.py --compare", "tune": "launch/tune.py"}


def _command(role: object) -> str:
    """The command that writes as `role`, as a user would type it."""
    return _COMMANDS.get(role, str(role))


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


def check_owned(folder: Path, names: Iterable[str], flag: str, role: str, record: dict | None = None) -> None:
    """Each of `names` (relative to `folder`) is absent, or a regular file the folder's record says
    `role` wrote. A name's folders (`code/` of `code/inference.py`) must be folders, writable where
    they exist."""
    folder = Path(folder)
    record = _read_record(folder, flag) if record is None else record
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
        elif _vouches(record.get(name), path, record.get(name, {}).get("role")):
            if record[name]["role"] == role:
                continue
            # ours, but another command's: replacing it would leave that command's folder inconsistent
            problem = f"was written by {_command(record[name]['role'])}, which owns it; this command replaces only its own files"
        elif not _vouches(record.get(name), path, role):
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
            wait_s: float = 0, new_in: Iterable[str] = ()) -> Iterator[Writer]:
    """Lock `folder` (created if need be) for `role`, check `names` under the lock, and yield its `Writer`.

    Until the block ends the record marks `names` as this process's. At the end, however it ends,
    each name this block wrote, and each of `in_place` (written by a library), is recorded as it
    is; any other name keeps what the record said before. So is each file that appeared during
    the block in the sub-folders `new_in`, where a library writes under names it makes up
    (TensorBoard's event files).
    """
    folder, names, in_place = Path(folder), list(names), set(in_place)
    found_before = _files_in(folder, new_in)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = _lock(folder, flag, exclusive=True, wait_s=wait_s)
    try:
        before = _read_record(folder, flag)
        check_owned(folder, names, flag, role, before)
        for sub in {(folder / name).parent for name in names}:
            remove_stale_partials(sub)
        if names:
            _save_record(folder, {**before, **{name: {"role": role, "pid": os.getpid()} for name in names}})
        writer = Writer(folder)
        try:
            yield writer
        finally:
            if names:
                files = _read_record(folder, flag)
                for name in names:
                    stamp = _stamp(folder / name)
                    if name in writer.written or name in in_place:
                        files[name] = {"role": role, "stamp": stamp}
                    elif files.get(name, {}).get("pid") == os.getpid():
                        files[name] = before.get(name) if stamp else None
                for name in _files_in(folder, new_in) - found_before - set(names):
                    files[name] = {"role": role, "stamp": _stamp(folder / name)}
                files = {name: entry for name, entry in files.items() if entry and entry.get("stamp", 1)}
                if files:
                    _save_record(folder, files)
                else:
                    (folder / RECORD).unlink(missing_ok=True)
            if created and not any(folder.iterdir()):  # nothing is left in the folder this made
                folder.rmdir()
    finally:
        _unlock(key)


def record_made(folder: Path, flag: str, role: str) -> None:
    """Record as `role`'s every file in `folder` that its record does not name yet.

    For a folder a launcher made under a new name (a local job's `jobs/<job>/`, a tuning's
    `tuning/<name>/`) and filled through other processes and libraries (staged code, host folders,
    logs, archives): called when they have ended, so that `make clean` can tell these files from
    any the user adds later.
    """
    folder = Path(folder)
    key = _lock(folder, flag, exclusive=True)
    try:
        files = _read_record(folder, flag)
        for parent, dirs, names in os.walk(folder):
            dirs.sort()
            rel = Path(parent).relative_to(folder).as_posix()
            if not dirs and not names and rel not in files:  # made for a host, left empty (a channel)
                files[rel] = {"role": role, "folder": True}
            for name in sorted(dirs + names):  # a link made for a host (input/data/code -> the staged code)
                path = Path(parent) / name
                if path.is_symlink() and path.relative_to(folder).as_posix() not in files:
                    files[path.relative_to(folder).as_posix()] = {"role": role, "link": os.readlink(path)}
            for name in sorted(names):
                path = Path(parent) / name
                rel = path.relative_to(folder).as_posix()
                if name == RECORD or name.endswith(PARTIAL_SUFFIX) or rel in files or not _stamp(path):
                    continue
                files[rel] = {"role": role, "stamp": _stamp(path)}
        if files:
            _save_record(folder, files)
    finally:
        _unlock(key)


def remove_owned(folder: Path, flag: str) -> list[Path]:
    """Remove the files in `folder` that its record says this project wrote and that are as it wrote
    them, and the partial files of writers that have gone; keep everything else. Returns what went.

    Under the folder's lock, so no command is writing it meanwhile: a name still marked with a pid
    is what a killed run left, which the next run would take as its own too.
    """
    folder = Path(folder)
    key = _lock(folder, flag, exclusive=True)
    try:
        removed = remove_stale_partials(folder)
        files = _read_record(folder, flag)
        for name, entry in files.items():
            path = folder / name
            if _stamp(path) and _vouches(entry, path, entry.get("role")):
                path.unlink()
                removed.append(path)
            elif "link" in entry and path.is_symlink() and os.readlink(path) == entry["link"]:
                path.unlink()
                removed.append(path)
        for name in sorted((n for n, e in files.items() if e.get("folder")), key=lambda n: -n.count("/")):
            path = folder / name
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
                removed.append(path)
        # Every name left is the user's now (edited since, or put where ours was): the record has
        # nothing more to say, and a command writing here later finds the folder as a new one.
        if os.path.lexists(folder / RECORD):
            (folder / RECORD).unlink()
            removed.append(folder / RECORD)
        return removed
    finally:
        _unlock(key)

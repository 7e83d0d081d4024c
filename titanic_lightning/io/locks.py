"""Folder locks that keep two commands out of each other's way: `flock` on the folder's own descriptor.

It needs no file (a read-only channel folder can be locked too), and the kernel drops it when its process
ends, however it ends. A folder another command holds is refused at once, naming the holder (`Busy`).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from titanic_lightning.errors import UsageError

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


@contextmanager
def holding(folder: Path, flag: str, exclusive: bool, wait_s: float = 0) -> Iterator[None]:
    """Lock `folder` for this process (again, if it holds it already) while the block runs."""
    st = os.stat(folder)
    key = (st.st_dev, st.st_ino)
    # One entry per folder, shared by every holder in this process: holders may end in any order.
    held = _held.get(key) or [os.open(folder, os.O_RDONLY | os.O_DIRECTORY), 0, False]
    fd, count, was_exclusive = held
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
    held[1:] = [count + 1, exclusive or was_exclusive]
    _held[key] = held
    try:
        yield
    finally:
        held[1] -= 1
        if not held[1]:
            del _held[key]
            os.close(fd)  # closing the descriptor releases the lock


def reading(folder: Path, flag: str) -> AbstractContextManager[None]:
    """A shared lock on `folder` (if it exists) while it is read: no command writes it meanwhile."""
    return holding(Path(folder), flag, exclusive=False) if Path(folder).is_dir() else nullcontext()

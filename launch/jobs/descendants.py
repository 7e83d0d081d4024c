"""Every process an emulated host starts, found wherever it now sits in the process tree.

A host's process group is not all of it: torch elastic starts each worker in a session of its own
(`start_new_session=True`), so a signal to torchrun's group misses the workers, and a worker whose
torchrun ends is re-parented, by default to PID 1, where nothing of the job would look for it.
Two things keep them in hand, on Linux:

* each host is started with a mark in its environment (`MARK_VARIABLE`, unique to the host),
  which every process it starts inherits, whatever its session or parent: the processes with a
  host's mark are that host's, found in /proc. Walking the tree down from torchrun would miss a
  worker already orphaned, and recording pids as they appear would miss one started and orphaned
  between two looks;
* while the hosts run, the launcher is a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`): an
  orphan anywhere below it is re-parented to the launcher, not to PID 1, so the launcher can reap
  what it stops, and nothing of the job is left to an init that may not reap at all.

Without /proc nothing is found here and a host is its process group; without prctl an orphan is
still found by its mark, under PID 1.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARK_VARIABLE = "TITANIC_LOCAL_HOST_MARK"
PROC = Path("/proc")
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process even once the pid is reused
    zombie: bool


def _prctl(option: int, arg) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


class _Subreaper:
    """The process's subreaper setting, held while any job of this process runs (jobs run in threads
    of one process share it): the last one to end restores it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.jobs = 0
        self.restore = False

    @contextmanager
    def held(self) -> Iterator[None]:
        with self.lock:
            if self.jobs == 0:
                previous = ctypes.c_int(0)
                _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous))
                self.restore = not previous.value and _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1))
            self.jobs += 1
        try:
            yield
        finally:
            with self.lock:
                self.jobs -= 1
                if self.jobs == 0 and self.restore:
                    _prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(0))
                    self.restore = False


_subreaper = _Subreaper()


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process a child subreaper while the block runs (Linux)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    with _subreaper.held():
        yield


def _stat(pid: int) -> Process | None:
    try:
        text = (PROC / str(pid) / "stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return Process(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), start=int(fields[19]), zombie=fields[0] in "ZX")


def _table() -> list[Process]:
    try:
        names = os.listdir(PROC)
    except OSError:
        return []
    return [p for p in (_stat(int(n)) for n in names if n.isdigit()) if p is not None]


def _mark_of(pid: int) -> str | None:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = f"{MARK_VARIABLE}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def marked(marks: Iterable[str]) -> dict[str, list[Process]]:
    """The living processes that carry one of `marks`, by mark (random values: no other process has one)."""
    wanted = set(marks)
    found: dict[str, list[Process]] = {m: [] for m in wanted}
    for p in _table():
        if not p.zombie and (mark := _mark_of(p.pid)) in wanted:
            found[mark].append(p)
    return found


def still(p: Process) -> Process | None:
    """`p` as it is now (a zombie included), or None once it is gone (its pid free, or another process's)."""
    now = _stat(p.pid)
    return now if now is not None and now.start == p.start else None


def send(p: Process, sig: int) -> None:
    """`sig` to `p`'s whole group when it leads one, else to `p`; one that has ended is left alone."""
    try:
        if p.pgid == p.pid:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(processes: Iterable[Process]) -> None:
    """Collect the exit status of each of `processes` that ended as this process's child (an
    adopted orphan), so none stays a zombie; nothing else of this process's children is touched."""
    for p in processes:
        now = still(p)
        if now is not None and now.zombie and now.ppid == os.getpid():
            try:
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass

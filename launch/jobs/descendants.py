"""Every process an emulated host starts, wherever it now sits in the process tree (Linux).

torch elastic starts each worker in a session of its own, and an orphaned worker goes to PID 1. So
each host's processes inherit a mark in their environment (`MARK_VARIABLE`), found in /proc whatever
their session or parent, and while the hosts run the launcher is a child subreaper: an orphan below
it becomes its child, reaped once stopped. Without /proc a host is its process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARK_VARIABLE = "TITANIC_LOCAL_HOST_MARK"
PROC = Path("/proc")
PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 1, 36, 37


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot: with the pid, names one process even once the pid is reused
    zombie: bool


def prctl(option: int, arg) -> bool:
    """Linux's prctl(option, arg); False where it failed or there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(ctypes.c_int(option), arg, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0
    except (OSError, AttributeError):
        return False


# The subreaper setting is the process's: jobs run in threads of one process share it, and the last to end restores it.
_subreaper_lock = threading.Lock()
_subreaper = {"jobs": 0, "restore": False}


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process a child subreaper while the block runs (Linux; elsewhere prctl fails and nothing changes)."""
    with _subreaper_lock:
        if _subreaper["jobs"] == 0:
            previous = ctypes.c_int(0)
            prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous))
            _subreaper["restore"] = not previous.value and prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1))
        _subreaper["jobs"] += 1
    try:
        yield
    finally:
        with _subreaper_lock:
            _subreaper["jobs"] -= 1
            if _subreaper["jobs"] == 0 and _subreaper["restore"]:
                prctl(_PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(0))
                _subreaper["restore"] = False


def _stat(pid: int) -> Process | None:
    try:
        text = (PROC / str(pid) / "stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return Process(pid=pid, ppid=int(fields[1]), pgid=int(fields[2]), start=int(fields[19]), zombie=fields[0] in "ZX")


def _mark_of(pid: int) -> str | None:
    try:
        environ = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = f"{MARK_VARIABLE}=".encode()
    return next((e[len(prefix):].decode(errors="replace") for e in environ.split(b"\0") if e.startswith(prefix)), None)


def marked(marks: Iterable[str]) -> dict[str, list[Process]]:
    """The living processes that carry one of `marks`, by mark (random values: no other process has one)."""
    found: dict[str, list[Process]] = {m: [] for m in marks}
    with contextlib.suppress(OSError):
        for p in filter(None, (_stat(int(n)) for n in os.listdir(PROC) if n.isdigit())):
            if not p.zombie and (mark := _mark_of(p.pid)) in found:
                found[mark].append(p)
    return found


def still(p: Process) -> Process | None:
    """`p` as it is now (a zombie included), or None once it is gone (its pid free, or another process's)."""
    now = _stat(p.pid)
    return now if now is not None and now.start == p.start else None


def reap(processes: Iterable[Process]) -> None:
    """Collect the exit status of each of `processes` that ended as this process's child (an
    adopted orphan), so none stays a zombie; nothing else of this process's children is touched."""
    for p in processes:
        now = still(p)
        if now is not None and now.zombie and now.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, os.WNOHANG)

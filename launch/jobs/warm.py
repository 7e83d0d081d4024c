"""`python -m <module> args...` started from a warm interpreter: the local search's trials.

Importing torch and Lightning takes seconds, longer than a Titanic trial's training. The first
trial starts one fork server (Python's `multiprocessing` "forkserver") that imports the training
modules once; every trial after it is a fork of that server, so a search pays the imports once.
The server forks from a clean state (it never trains), so trials share no torch, Lightning or
signal state, and each is still a process of its own:

- it leads its own session, as `subprocess.Popen(start_new_session=True)` makes it: Ctrl-C at the
  terminal reaches the search only, and a signal to its process group reaches all of it;
- its standard output and error go to one pipe, read line by line while it runs;
- it runs in its own folder with its own environment, and exits with the entry's own code
  (0, 1, 2, 143), or minus the signal that killed it, as `Popen.returncode` reads;
- it gets SIGTERM if the server ends (the search was killed), so no trial outlives a search.

`WarmProcess` offers the part of `subprocess.Popen` the supervisors use: `pid`, `stdout`, `poll()`
and `wait()`. POSIX only, as the searches' process groups already are.
"""

from __future__ import annotations

import atexit
import ctypes
import io
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import sys
from pathlib import Path

# What each trial would otherwise import itself: the entry's parser, the library, Lightning,
# TensorBoard's writer and matplotlib for curves.png. (Not the entry itself, which `runpy` runs
# afresh as `__main__`, as `python -m` does.)
PRELOAD = ["__main__", "launch.jobs.warm", "titanic_lightning.command", "titanic_lightning.config",
           "titanic_lightning.training.layout", "titanic_lightning.training.train", "torch.utils.tensorboard",
           "matplotlib.pyplot"]

_PR_SET_PDEATHSIG = 1


# In the fork server's environment only (see `warm_up`).
_SERVER_VARIABLE = "TITANIC_LIGHTNING_WARM_SERVER"


def warm_up():
    """Start the fork server (and its imports) now, alongside the caller's own work; return its
    multiprocessing context."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    os.environ[_SERVER_VARIABLE] = "1"
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.pop(_SERVER_VARIABLE, None)
    return context


if os.environ.get(_SERVER_VARIABLE) == "1":
    # Imported by the fork server, which shares the caller's standard output: when the caller ends,
    # the server ends at once, instead of spending a second unloading torch while a reader of that
    # output (`tune.py ... | tee log`) still waits for it. Its children never run atexit handlers.
    atexit.register(os._exit, 0)


def _end_with_server() -> None:
    """SIGTERM this process when its parent, the fork server, ends (Linux; elsewhere a no-op)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the server ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child(module: str, args: list[str], cwd: str, env: dict[str, str], out, err) -> None:
    os.setsid()
    for fd, pipe in ((1, out), (2, err or out)):
        os.dup2(pipe.fileno(), fd)
    for pipe in filter(None, (out, err)):
        pipe.close()
    # Line-buffered, as PYTHONUNBUFFERED makes a cold run's output: the reader sees each epoch's line.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    _end_with_server()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        # torch read the variable when the server imported it; the trial's own value applies from here.
        torch.set_num_threads(max(1, int(env["OMP_NUM_THREADS"])))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _text_reader(connection) -> io.TextIOWrapper:
    reader = io.TextIOWrapper(io.FileIO(os.dup(connection.fileno()), "r"), errors="replace")
    connection.close()
    return reader


class WarmProcess:
    """`python -m module args...` in `cwd` with `env`, forked from the warm server (see the module's
    docstring): its standard output and error in `stdout`, or apart in `stdout` and `stderr`."""

    def __init__(self, module: str, args: list[str], cwd: Path, env: dict[str, str], stderr_apart: bool = False):
        context = warm_up()
        pipes = [context.Pipe(duplex=False) for _ in range(2 if stderr_apart else 1)]
        writers = [w for _, w in pipes] + [None] * (2 - len(pipes))
        self._process = context.Process(target=_child, args=(module, list(args), str(cwd), dict(env), *writers),
                                        name=f"{module} in {cwd}", daemon=False)
        try:
            self._process.start()
        finally:
            for _, writer in pipes:
                writer.close()
        self.pid = self._process.pid
        readers = [_text_reader(r) for r, _ in pipes]
        self.stdout, self.stderr = readers[0], (readers[1] if stderr_apart else None)

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

"""`python -m <module> args...` forked from a warm interpreter: the local search's trials.

Importing torch and Lightning takes longer than a Titanic trial trains, so one fork server
(`multiprocessing`'s "forkserver", which never trains) imports the training modules once and every
trial is a fork of it. Each trial is still a process of its own, as `Popen(start_new_session=True)`
makes one: its own session, folder, environment and exit code, its output on a pipe; and it gets
SIGTERM if the server ends, so no trial outlives a search. POSIX only.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import signal
import sys
from pathlib import Path

from launch.jobs.descendants import PR_SET_PDEATHSIG, prctl

# What each trial would otherwise import itself (not the entry, which `runpy` runs afresh as `__main__`).
PRELOAD = ["__main__", "launch.jobs.warm", "titanic_lightning.command", "titanic_lightning.config",
           "titanic_lightning.training.layout", "titanic_lightning.training.train", "torch.utils.tensorboard",
           "matplotlib.pyplot"]
_SERVER_VARIABLE = "TITANIC_LIGHTNING_WARM_SERVER"  # in the fork server's environment only


def warm_up():
    """Start the fork server (and its imports) now, alongside the caller's own work; its multiprocessing context."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    os.environ[_SERVER_VARIABLE] = "1"
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.pop(_SERVER_VARIABLE, None)
    return context


if os.environ.get(_SERVER_VARIABLE) == "1":
    # The server shares the caller's standard output: it ends at once with the caller instead of
    # unloading torch while a reader (`tune.py ... | tee log`) waits. Its children never run atexit handlers.
    atexit.register(os._exit, 0)


def _child(module: str, args: list[str], cwd: str, env: dict[str, str], out, err) -> None:
    os.setsid()
    for fd, pipe in ((1, out), (2, err or out)):
        os.dup2(pipe.fileno(), fd)
    for pipe in filter(None, (out, err)):
        pipe.close()
    # Line-buffered, as PYTHONUNBUFFERED makes a cold run's output: the reader sees each epoch's line.
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True, errors="backslashreplace")
    parent = os.getppid()
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the server ended before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        # torch read the variable when the server imported it; the trial's own value applies from here.
        torch.set_num_threads(max(1, int(env["OMP_NUM_THREADS"])))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


class WarmProcess:
    """`python -m module args...` in `cwd` with `env`, forked from the warm server: its standard output
    and error in `stdout`, or apart in `stdout` and `stderr`."""

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
        readers = [io.TextIOWrapper(io.FileIO(os.dup(reader.fileno()), "r"), errors="replace") for reader, _ in pipes]
        for reader, _ in pipes:
            reader.close()
        self.stdout, self.stderr = readers[0], (readers[1] if stderr_apart else None)

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode

"""The wrapper every `python -m entry.*` command (and the launcher) runs under.

A `UsageError` ends as one line on stderr with exit code 2. Anything else is a runtime failure:
one line, exit 1, unless `--debug` is on the command line, which shows the traceback. Either way
the reason is also written to SageMaker's failure file when there is one, so it becomes the job's
FailureReason. Standard output's reader stopping early (`python -m entry.predict ... | head`) is
neither: the command ends quietly with exit code 141, as a Unix tool ended by SIGPIPE does.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from titanic_lightning import environment
from titanic_lightning.errors import (
    FAILURE_EXIT,
    INTERRUPT_EXIT,
    SIGPIPE_EXIT,
    SIGTERM_EXIT,
    USAGE_EXIT,
    Interrupted,
    Terminated,
    UsageError,
    one_line,
)


def debug_requested(args: Sequence[str]) -> bool:
    """Whether the command line turns --debug on, read the way the commands' parsers read booleans.

    `--debug V` and `--debug=V` count when jsonargparse reads V as true (true, yes, on, in any of
    the cases it accepts), and so does `debug:` in a `--config` file; the last one wins, as in the
    parser. A bare `--debug` (the launcher's switch) counts too.
    """
    value = None
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--debug":
            value = "true" if following is None or following.startswith("--") else following
        elif arg.startswith("--debug="):
            value = arg.partition("=")[2]
        elif arg == "--config" and following is not None:
            value = _debug_in_config(following, value)
        elif arg.startswith("--config="):
            value = _debug_in_config(arg.partition("=")[2], value)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--debug", type=bool)
    try:
        return parser.parse_args(["--debug", value]).debug is True
    except Exception:  # noqa: BLE001 - not a boolean: the command's own parser will say so
        return False


def _debug_in_config(config: str, current):
    """The `debug` value a --config file (or inline YAML, as jsonargparse accepts) sets, else `current`."""
    import yaml

    try:
        path = Path(config)
        data = yaml.safe_load(path.read_text(encoding="utf-8") if path.is_file() else config)
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return current  # the command's own parser names what is wrong with the file
    if not isinstance(data, dict) or "debug" not in data:
        return current
    debug = data["debug"]
    return debug if isinstance(debug, (bool, str)) else False


class DeferredStop:
    """Whether a SIGTERM, or a Ctrl-C, arrived while the command's handlers were deferred."""

    def __init__(self):
        self.received = False
        self.interrupted = False


_deferred: DeferredStop | None = None


@contextmanager
def stops_deferred() -> Iterator[DeferredStop]:
    """While Lightning trains, its own handler turns SIGTERM into a stop at a batch boundary (and a
    checkpoint); the command's handler, which Lightning calls too, then only notes the signal, which
    the caller checks afterwards (Lightning's handler is not in place for all of `fit`).

    Ctrl-C is noted the same way and raised as KeyboardInterrupt at the next batch start
    (`training.callbacks.StopWhenNoted`), where Lightning's own shutdown runs: raised wherever the
    signal lands, it can land inside TensorBoard's writer and lose the wake-up its shutdown waits
    for, which stalls the command for the writer's 120 s flush interval. A second Ctrl-C interrupts at once.
    """
    global _deferred
    previous, _deferred = _deferred, DeferredStop()
    main = threading.current_thread() is threading.main_thread()
    previous_sigint = signal.signal(signal.SIGINT, _on_sigint) if main else None
    try:
        yield _deferred
    finally:
        _deferred = previous
        if main:
            signal.signal(signal.SIGINT, previous_sigint)


def stop_noted() -> bool:
    """Whether a SIGTERM arrived while the command's handler was deferred (see `stops_deferred`)."""
    return _deferred is not None and _deferred.received


def interrupt_noted() -> bool:
    """Whether a Ctrl-C arrived while the command's handler was deferred (see `stops_deferred`)."""
    return _deferred is not None and _deferred.interrupted


def _on_sigint(signum, frame) -> None:
    if _deferred is None or _deferred.interrupted:
        raise KeyboardInterrupt
    _deferred.interrupted = True


def _on_sigterm(signum, frame) -> None:
    # Python's default would end the process at once, with no reason for the job and partial files
    # left behind; an exception runs the clean-ups and ends in one line.
    if _deferred is not None:
        _deferred.received = True
    else:
        raise Terminated("stopped by SIGTERM")


def take_back_sigterm() -> None:
    """Make the command's handler SIGTERM's only handler again, replacing the one Lightning installs
    for each fit, validate or test (see `training.callbacks.StopWhenNoted`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


_requeue = {"watched": False, "asked": False}


def _on_sigusr1(signum, frame) -> None:
    # SLURM's warning before the time limit (`#SBATCH --signal=SIGUSR1@90`): training stops at the
    # next batch on every rank (`callbacks.StopWhenNoted`), saves last.ckpt, and the job is requeued.
    _requeue["asked"] = True


def requeue_watched() -> bool:
    """Whether SLURM's SIGUSR1 is handled here (the command runs in a SLURM job)."""
    return _requeue["watched"]


def requeue_asked() -> bool:
    return _requeue["asked"]


def ask_requeue() -> None:
    _requeue["asked"] = True


def _requeue_if_asked(message: str) -> str:
    """After a stop asked for by SIGUSR1 in a SLURM job: global rank 0 requeues the job."""
    job = os.environ.get("SLURM_JOB_ID")
    if not _requeue["asked"] or not job:
        return message
    stopped = "error: stopped by SLURM's SIGUSR1 (the time limit is near)"
    if not environment.is_global_zero():
        return f"{stopped}; global rank 0 requeues job {job}"
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"{stopped}; `scontrol requeue {job}` failed: {' '.join(done.stderr.split())}"
    return f"{stopped}; job {job} requeued, to continue from its last checkpoint"


@contextmanager
def _sigterm_handled(restore: bool = True) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signal.SIGTERM: _on_sigterm}
    if os.environ.get("SLURM_JOB_ID"):
        handlers[signal.SIGUSR1] = _on_sigusr1
        _requeue["watched"] = True
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        if restore:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _ignore_late_stops() -> None:
    # The command's work is done and it is about to exit 0: a stop that arrives while the
    # interpreter shuts down (torch takes a moment) must not turn it into a process killed by the signal.
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)


def run_command(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """Run `main(argv)` and exit with 0, 1 (runtime failure), 2 (usage error), 130 (Ctrl-C) or 143 (SIGTERM)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Read before parsing, so that even a parse failure can show its traceback: `--debug true`.
    debug = debug_requested(args)
    try:
        # A real process (argv from sys.argv) keeps its handlers to the end; a call from Python
        # gets its own back.
        with _sigterm_handled(restore=argv is not None):
            main(args)
            sys.stdout.flush()  # here, where a reader that has gone is still answered quietly
            if argv is None:
                _ignore_late_stops()
    except Terminated as exc:
        _fail(_requeue_if_asked(f"error: {one_line(exc)}"), SIGTERM_EXIT)
    except UsageError as exc:
        _fail(f"error: {one_line(exc)}", USAGE_EXIT)
    except Interrupted as exc:
        _fail(f"error: {one_line(exc)}", INTERRUPT_EXIT)
    except KeyboardInterrupt:
        _fail("error: interrupted", INTERRUPT_EXIT)
    except SystemExit as exc:
        # Lightning catches Ctrl-C itself, shuts down and calls sys.exit(1) while handling it.
        if isinstance(exc.__context__, KeyboardInterrupt):
            _fail("error: interrupted", INTERRUPT_EXIT)
        # Lightning turns SIGTERM (a stop, a spot reclaim) into SIGTERMException, a SystemExit with
        # no code, which would end the process with 0 and mark an interrupted job Completed.
        if type(exc).__name__ == "SIGTERMException":
            _fail(_requeue_if_asked("error: stopped by SIGTERM; run the same command again to resume from the last "
                                    "checkpoint"), SIGTERM_EXIT)
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a command
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            _end_quietly()
        reason = f"error: {type(exc).__name__}: {one_line(exc)}"
        if debug:
            environment.write_failure_reason(reason)  # the job still gets its reason; stderr the traceback
            raise
        _fail(f"{reason} (rerun with --debug for the traceback)", FAILURE_EXIT)
    sys.exit(0)


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe (or socket) whose reading end is closed."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by an object without a descriptor, or closed
        return False
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _end_quietly() -> None:
    """End as a Unix tool does when its reader stops reading (`... | head`): no message, exit 141."""
    # What is still buffered for standard output can never be written; with the descriptor on
    # /dev/null the interpreter's final flush does not print an error of its own.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(SIGPIPE_EXIT)


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr, flush=True)
    environment.write_failure_reason(message)
    sys.exit(code)

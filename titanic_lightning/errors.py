"""User-facing errors: `UsageError`, one-line messages and the exit codes.

A mistake by the user (a bad flag, a missing file, malformed data) raises `UsageError`; the
command wrapper (`titanic_lightning.command.run_command`) ends it as one line on stderr with exit
code 2. This module imports nothing of the project, so the serving bundle copies it alone.
"""

from __future__ import annotations

import os

USAGE_EXIT = 2
FAILURE_EXIT = 1
SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by the signal
INTERRUPT_EXIT = 130  # 128 + SIGINT (Ctrl-C)
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: standard output's reader stopped reading (`... | head`)


class UsageError(Exception):
    """Bad input from the user: a flag, a file or a field. The message names which."""


class Interrupted(Exception):
    """Ctrl-C, ending a command with one line that says what goes on without it (exit code 130)."""


class Terminated(BaseException):
    """SIGTERM stopped the command (a stop, a spot reclaim); the message says what was kept.

    A BaseException, like KeyboardInterrupt: code that reads a file under `except Exception` must
    not mistake a stop for a damaged file."""


def not_a_file(path) -> str:
    """Why `path`, which is not a regular file, cannot be read as one."""
    return "is a folder; give a file" if os.path.isdir(path) else (
        "not a regular file" if os.path.exists(path) else "no such file")


def one_line(text: str) -> str:
    return " ".join(str(text).split())

"""The launcher's console: progress lines, one per event, on stderr (stdout keeps only results), and
the argument parser its commands share."""

from __future__ import annotations

import argparse
import sys

from titanic_lightning.errors import UsageError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes end as one `error: ...` line and exit 2 through `run_command`, not
    argparse's usage dump; `hint` is appended to the message."""

    def __init__(self, *args, hint: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.hint = hint

    def error(self, message: str):
        raise UsageError(f"{message}{self.hint}")

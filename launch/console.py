"""The launcher's progress lines: one per event, on stderr, so stdout keeps only results."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

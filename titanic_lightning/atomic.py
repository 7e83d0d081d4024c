"""Writing an output file whole or not at all: a temporary sibling, renamed over the target."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from titanic_lightning.errors import UsageError


@contextmanager
def atomic_output(out: Path, flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside `out`; on success it becomes `out`, on failure it is removed."""
    out = Path(out)
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"{flag} {out}: not a file in an existing directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=out.suffix, dir=out.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

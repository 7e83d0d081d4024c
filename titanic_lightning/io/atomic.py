"""Writing output files whole or not at all, inside their own folder.

A file is written under a partial name beside its target, `.NAME.PID-TOKEN.partial`, and renamed
over the target when complete. The rename never leaves the folder, so it never crosses a mount
boundary (SageMaker mounts /opt/ml/model, /opt/ml/output and /opt/ml/checkpoints separately) and a
reader sees the old file or the new one, never a part. A process killed before the rename (SIGKILL,
or SIGTERM outside training) leaves its partial file behind; the next writer into the same folder
removes partial files whose process no longer runs and that carry this project's mark (an extended
attribute set when the partial file is created), and nothing else: a user's file or folder that
merely has such a name stays. Where the file system keeps no extended attributes, a killed
writer's partial file stays too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
# A failed write into a folder with less free space than this is reported as a full disk.
DISK_NEARLY_FULL = 1 << 20
_PARTIAL = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.partial$")


PARTIAL_MARK = "user.titanic-lightning"  # on a partial file while it is written, taken off before the rename


def _marked(path: Path) -> bool:
    try:
        return os.getxattr(path, PARTIAL_MARK, follow_symlinks=False) == b"partial"
    except OSError:
        return False


def partial_path(target: Path) -> Path:
    """A fresh partial name beside `target`, tagged with this process's id."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial files in `folder` left by writers that no longer run; return them."""
    removed = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for name in names:
        match = _PARTIAL.match(name)
        path = Path(folder) / name
        if (match and int(match.group(1)) != os.getpid() and not _running(int(match.group(1)))
                and not path.is_symlink() and path.is_file() and _marked(path)):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed


@contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a partial path beside `out`; on success it becomes `out`, on failure it is removed.

    The folder must exist: callers check their output paths before any work starts.
    """
    out = Path(out)
    tmp = partial_path(out)
    # Created with the permissions a plain open() would give (0666 less the umask).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        os.setxattr(tmp, PARTIAL_MARK, b"partial", follow_symlinks=False)
    except OSError:
        pass  # no extended attributes here: a killed writer's partial file is then left in place
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as exc:
            full = _disk_full(out, exc)
            if full is None:
                raise
            raise full from exc
        with contextlib.suppress(OSError):  # not marked: no extended attributes here
            os.removexattr(tmp, PARTIAL_MARK, follow_symlinks=False)
        os.replace(tmp, out)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _disk_full(out: Path, exc: BaseException) -> OSError | None:
    """The error to report when a write failed because the disk holding `out` is full: torch's own
    reads `basic_ios::clear: iostream error` or `unexpected pos`, which names neither."""
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return None
    if getattr(exc, "errno", None) != errno.ENOSPC and free > DISK_NEARLY_FULL:
        return None
    return OSError(errno.ENOSPC, f"no space left on the disk holding {out.parent} ({free:,} bytes free) "
                                 f"while writing {out.name}; free some space or choose another folder")


def write_text(out: Path, text: str) -> Path:
    """Write `text` to `out` whole (partial file, then rename)."""
    with atomic_output(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(out)


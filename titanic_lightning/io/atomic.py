"""Writing output files whole or not at all: as `.NAME.PID-TOKEN.partial` beside the target, renamed
over it when complete, so a reader sees the old file or the new one and nothing crosses a mount
boundary (SageMaker mounts /opt/ml/model, output and checkpoints separately). A partial file carries
this project's mark (an extended attribute) from the moment it has a name; the next writer into the
folder removes the marked ones whose process has gone, and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
PARTIAL_MARK = "user.titanic-lightning"  # on a partial file while it is written, taken off after the rename
DISK_NEARLY_FULL = 1 << 20  # a failed write into a folder with less free space is reported as a full disk
_PARTIAL = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.partial$")


def _marked(path: Path) -> bool:
    try:
        return os.getxattr(path, PARTIAL_MARK, follow_symlinks=False) == b"partial"
    except (OSError, AttributeError):  # AttributeError: no extended attributes on this system (macOS)
        return False


def partial_path(target: Path) -> Path:
    """A fresh partial name beside `target`, tagged with this process's id."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partial files in `folder` left by writers that no longer run; return them."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        match = _PARTIAL.match(name)
        path = Path(folder) / name
        if (match and int(match.group(1)) != os.getpid() and not _running(int(match.group(1)))
                and not path.is_symlink() and path.is_file() and _marked(path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _create_marked(tmp: Path) -> None:
    """Create `tmp` empty (0666 less the umask) and marked from the moment it has a name: made unnamed
    (O_TMPFILE), marked, linked in. Without O_TMPFILE, /proc or xattrs: created, marked where it can be."""
    try:
        with contextlib.ExitStack() as close:
            folder = os.open(tmp.parent, os.O_RDONLY | os.O_DIRECTORY)
            close.callback(os.close, folder)
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o666, dir_fd=folder)
            close.callback(os.close, fd)
            os.setxattr(fd, PARTIAL_MARK, b"partial")
            # With a folder descriptor os.link is linkat(AT_SYMLINK_FOLLOW): through /proc, as open(2) shows.
            os.link(f"/proc/self/fd/{fd}", tmp.name, dst_dir_fd=folder)
    except (OSError, AttributeError):  # AttributeError: no os.O_TMPFILE on this system
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        with contextlib.suppress(OSError, AttributeError):
            os.setxattr(tmp, PARTIAL_MARK, b"partial", follow_symlinks=False)


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a partial path beside `out` (whose folder exists); it becomes `out` on success, else goes."""
    out = Path(out)
    tmp = partial_path(out)
    _create_marked(tmp)
    try:
        try:
            yield tmp
        except (OSError, RuntimeError) as exc:
            full = _disk_full(out, exc)
            if full is None:
                raise
            raise full from exc
        # Renamed still marked: a writer killed in between leaves a whole target with a stray mark,
        # never an unmarked partial file that no later run would remove.
        os.replace(tmp, out)
        with contextlib.suppress(OSError, AttributeError):  # not marked: no extended attributes here
            os.removexattr(out, PARTIAL_MARK, follow_symlinks=False)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _disk_full(out: Path, exc: BaseException) -> OSError | None:
    """The error for a write that failed on a full disk: torch's own (`basic_ios::clear: iostream error`,
    `unexpected pos`) names neither the disk nor the file."""
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:
        return None
    if getattr(exc, "errno", None) != errno.ENOSPC and free > DISK_NEARLY_FULL:
        return None
    return OSError(errno.ENOSPC, f"no space left on the disk holding {out.parent} ({free:,} bytes free) "
                                 f"while writing {out.name}; free some space or choose another folder")


def write_text(out: Path, text: str) -> None:
    """Write `text` to `out` whole (partial file, then rename)."""
    with atomic_output(out) as tmp:
        tmp.write_text(text, encoding="utf-8")

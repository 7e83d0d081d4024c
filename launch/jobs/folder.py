"""What SageMaker keeps in S3 for a job, kept in its `--local` job folder: the fresh folder itself,
the checkpoint store standing in for the checkpoint URI (copied into every host before it starts,
back while it runs, and from an earlier job's with `--resume`), and model.tar.gz and output.tar.gz."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tarfile
import time
from pathlib import Path

from titanic_lightning.contracts import CHECKPOINT_FILE
from titanic_lightning.errors import UsageError
from titanic_lightning.io.atomic import atomic_output

STORE = "checkpoints"


def new_folder(parent: Path, name) -> tuple[str, Path]:
    """A fresh name from `name()` and its folder under `parent`, made by this call: every file in it is this run's."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        fresh = name()
        with contextlib.suppress(FileExistsError):
            (parent / fresh).mkdir()
            return fresh, parent / fresh


def new_job_dir(jobs_dir: Path, base_job_name: str) -> tuple[str, Path]:
    """A fresh job name (the SDK's `<base>-<timestamp>`, and 4 random hex digits) and its directory."""
    return new_folder(jobs_dir, lambda: f"{base_job_name[:43]}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-"
                                        f"{secrets.token_hex(2)}")


def resume_source(jobs_dir: Path, job_name: str) -> Path:
    """The checkpoint store of the earlier job `job_name`, which must hold a last.ckpt."""
    job_dir = jobs_dir / job_name
    if not job_dir.is_dir():
        raise UsageError(f"--resume {job_name}: no such job in {jobs_dir} (a job's name is its folder there)")
    store = job_dir / STORE
    if not (store / CHECKPOINT_FILE).is_file():
        raise UsageError(f"--resume {job_name}: no {CHECKPOINT_FILE} in {store} (the job ended before its first "
                         "checkpoint); nothing to resume")
    return store


def copy_tree(source: Path, target: Path) -> None:
    """Copy the files under `source` that are new or changed into `target`, each by rename (as the entry
    replaces last.ckpt), so none is read or left half-written."""
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        if not path.is_file() or path.name.startswith("."):  # partial files being written start with "."
            continue
        dest = target / path.relative_to(source)
        with contextlib.suppress(FileNotFoundError):  # replaced while we looked; the next sync takes the new one
            stat = path.stat()
            if dest.is_file() and (dest.stat().st_size, dest.stat().st_mtime) == (stat.st_size, stat.st_mtime):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(dest) as partial:
                shutil.copy2(path, partial)


def pack(dirs: list[Path], target: Path) -> list[str]:
    """Tar the union of `dirs` into `target`; return names written by more than one host."""
    seen, clashes = set(), []
    with tarfile.open(target, "w:gz") as tar:
        for root in dirs:
            for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
                name = path.relative_to(root).as_posix()
                if name in seen:
                    clashes.append(name)
                else:
                    seen.add(name)
                    tar.add(path, arcname=name)
    return clashes

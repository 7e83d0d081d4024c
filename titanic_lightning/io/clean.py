"""`make clean`: remove what this project's commands wrote, and nothing else.

    python -m titanic_lightning.io.clean [ROOT]

In FOLDERS, ROOT's other folders that hold a record (walked) and ROOT itself, a file goes only when its
folder's record (see `outputs`) says a command of this project wrote it and it is unchanged since; a
folder only when that left it empty. A folder a running command holds is refused. In ROOT, the logs
of launch/slurm.sbatch's jobs go too, known by their name and the line the script writes first.
Imports only the standard library, so it runs before any set-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from titanic_lightning.contracts import SLURM_LOG, SLURM_LOG_START
from titanic_lightning.errors import UsageError
from titanic_lightning.io.atomic import PARTIAL_SUFFIX, remove_stale_partials
from titanic_lightning.io.locks import holding
from titanic_lightning.io.outputs import RECORD, file_stamp, read_record, save_record, vouches

FOLDERS = ("data", "model", "outputs", "runs", "jobs", "tuning", "notebooks/titanic-work")
FLAG = "make clean:"


def record_made(folder: Path, flag: str, role: str) -> None:
    """Record as `role`'s every file in `folder` its record does not name yet, once the other processes that
    filled a launcher's folder (`jobs/<job>/`, `tuning/<name>/`) have ended: later files are the user's."""
    folder = Path(folder)
    with holding(folder, flag, exclusive=True):
        files = read_record(folder, flag)
        for parent, dirs, names in os.walk(folder):
            rel = Path(parent).relative_to(folder).as_posix()
            if not dirs and not names and rel not in files:  # made for a host, left empty (a channel)
                files[rel] = {"role": role, "folder": True}
            for name in dirs + names:
                path = Path(parent) / name
                rel = path.relative_to(folder).as_posix()
                if rel in files or name == RECORD or name.endswith(PARTIAL_SUFFIX):
                    continue
                if path.is_symlink():  # a link made for a host (input/data/code -> the staged code)
                    files[rel] = {"role": role, "link": os.readlink(path)}
                elif file_stamp(path):
                    files[rel] = {"role": role, "stamp": file_stamp(path)}
        if files:
            save_record(folder, files)


def remove_owned(folder: Path, flag: str) -> list[Path]:
    """Remove, under the folder's lock, the files its record says we wrote, as we wrote them (a name still
    marked with a pid is what a killed run left) and dead writers' partial files; return what went."""
    folder = Path(folder)
    with holding(folder, flag, exclusive=True):
        removed = remove_stale_partials(folder)
        files = read_record(folder, flag)
        for name, entry in files.items():
            path = folder / name
            if ((file_stamp(path) and vouches(entry, path))
                    or ("link" in entry and path.is_symlink() and os.readlink(path) == entry["link"])):
                path.unlink()
                removed.append(path)
        for name in sorted((n for n, e in files.items() if e.get("folder")), key=lambda n: -n.count("/")):
            path = folder / name
            if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
                removed.append(path)
        # Every name left is the user's now (edited since, or put where ours was): the record has
        # nothing more to say, and a command writing here later finds the folder as a new one.
        if os.path.lexists(folder / RECORD):
            (folder / RECORD).unlink()
            removed.append(folder / RECORD)
        return removed


def slurm_logs(root: Path) -> list[Path]:
    """The logs of launch/slurm.sbatch's jobs in `root`: named SLURM_LOG, starting with SLURM_LOG_START."""
    prefix, suffix = SLURM_LOG.split("{job_id}")
    found = []
    for path in sorted(Path(root).glob(f"{prefix}*{suffix}")):
        job_id = path.name[len(prefix):-len(suffix)]
        if not job_id.isdigit() or path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as fh:
            if fh.readline().startswith(SLURM_LOG_START.format(job_id=job_id).encode()):
                found.append(path)
    return found


def clean(root: Path) -> list[Path]:
    """Remove, under `root`, the files this project's commands wrote; return them."""
    root = Path(root)
    removed: list[Path] = []  # files, then the folders they left empty
    emptied: set[Path] = set()
    # The commands' default folders, and any other folder of ROOT a command wrote into (`--checkpoint_dir ck`).
    tops = [root / name for name in FOLDERS] + [p for p in root.iterdir() if os.path.lexists(p / RECORD)]
    tops = [top for top in dict.fromkeys(tops) if top.is_dir() and not top.is_symlink()]
    folders = [Path(parent) for top in tops for parent, _, _ in os.walk(top)]
    for folder in [root, *folders]:
        if not folder.is_dir() or folder.is_symlink():  # gone with an outer folder's record
            continue
        for path in remove_owned(folder, FLAG):
            removed.append(path)
            emptied.update(p for p in path.parents if p != root and root in p.parents)
    for path in slurm_logs(root):  # after the folders: a running job's folder is refused above
        path.unlink()
        removed.append(path)
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
            folder.rmdir()
            removed.append(folder)
    return removed


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path()
    try:
        removed = clean(root)
    except UsageError as exc:  # a folder in use, or a record that is not ours: the rest stays for a rerun
        line = str(exc).replace("wait until it ends or choose another make clean:", "run make clean when it has ended")
        print(f"error: {line.replace('or choose another make clean:', 'and run make clean again')}", file=sys.stderr)
        return 2
    print(f"make clean: removed what titanic-lightning's commands wrote ({len(removed)} files and folders)"
          f"{' under ' + str(root) if argv else ''}; anything else is left as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

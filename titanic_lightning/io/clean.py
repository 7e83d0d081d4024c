"""`make clean`: remove what this project's commands wrote, and nothing else.

    python -m titanic_lightning.io.clean [ROOT]

In the folders the commands write by default (data/, model/, outputs/, runs/, jobs/, tuning/, the
notebook's titanic-work/, each walked) and in ROOT itself (not walked), a file goes only when the
record of its folder (`.titanic-lightning-files`, see `outputs`) says a command of this project wrote
it and it is unchanged since; a folder goes only when removing those files left it empty. The
user's own files, files of ours edited since, and anything in no record stay where they are. A
folder a running command holds is refused, as every command refuses it.

Imports only the standard library, so it runs before any set-up.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import remove_owned

FOLDERS = ("data", "model", "outputs", "runs", "jobs", "tuning", "notebooks/titanic-work")
FLAG = "make clean:"


def clean(root: Path) -> list[Path]:
    """Remove, under `root`, the files this project's commands wrote; return them."""
    root = Path(root)
    removed: list[Path] = []  # files, then the folders they left empty
    emptied: set[Path] = set()
    tops = [root / name for name in FOLDERS if (root / name).is_dir() and not (root / name).is_symlink()]
    folders = [Path(parent) for top in tops for parent, _, _ in os.walk(top)]
    for folder in [root, *folders]:
        if not folder.is_dir() or folder.is_symlink():  # gone with an outer folder's record
            continue
        for path in remove_owned(folder, FLAG):
            removed.append(path)
            emptied.update(p for p in path.parents if p != root and root in p.parents)
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

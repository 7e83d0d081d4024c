"""The project's dependency bounds, as pyproject.toml declares them: read when requirements are
written (the code a training job ships, a model directory's serving `code/`), never copied by hand.

Where the bounds come from, first found:

* `pyproject.toml` beside this package (a checkout);
* `dependencies.txt` inside the package, which `launch.jobs.code.stage` writes from pyproject.toml into
  the code a job ships (the job's container has the package but not pyproject.toml);
* the installed distribution's metadata.
"""

from __future__ import annotations

import re
from pathlib import Path

from titanic_lightning.contracts import PROJECT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the installed metadata holds the same list
    tomllib = None

PACKAGE = Path(__file__).resolve().parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"
STAGED = PACKAGE / "dependencies.txt"


def name(requirement: str) -> str:
    """The project a requirement names, lowercase: `jsonargparse[signatures]>=4.43` → `jsonargparse`."""
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].strip().lower()


def declared() -> list[str]:
    """pyproject.toml's `[project] dependencies`, from the first source above."""
    if tomllib is not None and PYPROJECT.is_file():
        return list(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"])
    if STAGED.is_file():
        return [line for line in STAGED.read_text(encoding="utf-8").splitlines() if line.strip()]
    from importlib import metadata

    return [r for r in metadata.requires(PROJECT) or [] if "extra ==" not in r]


def bounds(names: tuple[str, ...]) -> list[str]:
    """The declared requirement of each named project, in the order given."""
    table = {name(r): r for r in declared()}
    missing = [n for n in names if n not in table]
    if missing:
        raise LookupError(f"not among the project's dependencies: {', '.join(missing)}")
    return [table[n] for n in names]

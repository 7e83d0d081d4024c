"""The `code/` folder of a model directory, what a SageMaker PyTorch serving container runs:
`inference.py` (the handler, this package's `inference.py`), copies of the modules it needs under
`titanic_lightning/` (so the container scores rows exactly as `entry.predict` does without this project
installed), and `requirements.txt` (what the serving image lacks; it installs it at start).
"""

from __future__ import annotations

from pathlib import Path

CODE_DIR = "code"
# The handler's imports, followed to their closure; tests/test_serving.py imports them with only
# code/ and site-packages on sys.path, so a module missing here fails there.
PACKAGE_MODULES = ("__init__.py", "contracts.py", "errors.py", "data/__init__.py", "data/columns.py", "data/features.py",
                   "model/__init__.py", "model/network.py", "io/__init__.py", "io/artifacts.py", "serving/__init__.py",
                   "serving/scoring.py")
REQUIRED = ("numpy", "pandas")  # torch comes with the image and must not be reinstalled
REQUIREMENTS_FILE = f"{CODE_DIR}/requirements.txt"
_PACKAGE = Path(__file__).resolve().parents[1]
# Name in the model directory → the file it is copied from (requirements.txt aside).
_SOURCES = {f"{CODE_DIR}/inference.py": _PACKAGE / "serving" / "inference.py",
            **{f"{CODE_DIR}/{_PACKAGE.name}/{name}": _PACKAGE / name for name in PACKAGE_MODULES}}


def requirements() -> list[str]:
    """What the serving container installs, with the bounds pyproject.toml declares."""
    from titanic_lightning.dependencies import bounds

    return bounds(REQUIRED)


def serving_files() -> list[str]:
    """Every file `write_serving_code` writes, by its name in the model directory."""
    return [*_SOURCES, REQUIREMENTS_FILE]


def write_serving_code(files) -> None:
    """Write `code/` with the model directory's `outputs.Writer`."""
    for name, source in _SOURCES.items():
        files.write(name, lambda tmp, source=source: tmp.write_bytes(source.read_bytes()))
    files.write_text(REQUIREMENTS_FILE, "\n".join(requirements()) + "\n")

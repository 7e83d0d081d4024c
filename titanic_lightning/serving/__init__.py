"""The `code/` folder of a model directory: what a SageMaker PyTorch serving container runs.

`write_serving_code(model_dir)` puts into `model_dir/code/`:

* `inference.py` — the handler (`model_fn`, `input_fn`, `predict_fn`, `output_fn`), this package's
  `serving/inference.py`;
* `titanic_lightning/` — copies of the modules the handler needs (serving/scoring, data/columns,
  data/features, model/network, io/artifacts, contracts, errors, and their packages' `__init__.py`),
  so the container scores rows exactly as `entry.predict` does without this
  project being installed;
* `requirements.txt` — what the PyTorch serving image lacks; the container installs it at start.

Each file is written whole (partial name, then rename) inside `code/`; nothing else there is touched.
"""

from __future__ import annotations

from pathlib import Path

CODE_DIR = "code"
# The handler's imports, followed to their closure; tests/test_serving.py imports them with only
# code/ and site-packages on sys.path, so a module missing here fails there.
PACKAGE_MODULES = ("__init__.py", "contracts.py", "errors.py", "data/__init__.py", "data/columns.py", "data/features.py",
                   "model/__init__.py", "model/network.py", "io/__init__.py", "io/artifacts.py", "serving/__init__.py",
                   "serving/scoring.py")
# Bounds as pyproject.toml declares them (`titanic_lightning.dependencies`). torch comes with the
# image and must not be reinstalled.
REQUIRED = ("numpy", "pandas")
REQUIREMENTS_FILE = f"{CODE_DIR}/requirements.txt"


def _package() -> Path:
    return Path(__file__).resolve().parents[1]


def _sources() -> dict[str, Path]:
    """Relative name in the model directory → the file it is copied from (requirements.txt aside)."""
    package = _package()
    sources = {f"{CODE_DIR}/inference.py": Path(__file__).with_name("inference.py")}
    sources.update({f"{CODE_DIR}/{package.name}/{name}": package / name for name in PACKAGE_MODULES})
    return sources


def requirements() -> list[str]:
    """What the serving container installs, with the project's declared bounds."""
    from titanic_lightning.dependencies import bounds

    return bounds(REQUIRED)


def serving_files() -> list[str]:
    """Every file `write_serving_code` writes, by its name in the model directory."""
    return [*_sources(), REQUIREMENTS_FILE]


def write_serving_code(files) -> None:
    """Write `code/` (inference.py, titanic_lightning/, requirements.txt) with the model directory's
    `outputs.Writer`."""
    for name, source in _sources().items():
        files.write(name, lambda tmp, source=source: tmp.write_bytes(source.read_bytes()))
    files.write_text(REQUIREMENTS_FILE, "\n".join(requirements()) + "\n")

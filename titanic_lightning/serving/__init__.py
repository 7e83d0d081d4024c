"""The `code/` folder of a model directory: what a SageMaker PyTorch serving container runs.

`write_serving_code(model_dir)` puts into `model_dir/code/`:

* `inference.py` — the handler (`model_fn`, `input_fn`, `predict_fn`, `output_fn`), this package's
  `serving/inference.py`;
* `titanic_lightning/` — copies of the modules the handler needs (scoring, features, network,
  artifacts, errors), so the container scores rows exactly as `entry.predict` does without this
  project being installed;
* `requirements.txt` — what the PyTorch serving image lacks; the container installs it at start.

Each file is written whole (partial name, then rename) inside `code/`; nothing else there is touched.
"""

from __future__ import annotations

from pathlib import Path

CODE_DIR = "code"
# The handler's imports, followed to their closure; tests/test_serving.py imports them with only
# code/ and site-packages on sys.path, so a module missing here fails there.
PACKAGE_MODULES = ("__init__.py", "errors.py", "features.py", "network.py", "artifacts.py", "scoring.py")
# Bounds as in pyproject's dependencies. torch comes with the image and must not be reinstalled.
REQUIREMENTS = ("numpy>=1.26", "pandas>=2.1")
# The first line names the project, so a later run recognises the file as its own (pip skips comments).
REQUIREMENTS_HEADER = "# titanic-lightning serving: what the PyTorch serving image lacks"


def _package() -> Path:
    return Path(__file__).resolve().parents[1]


def _sources() -> dict[str, Path]:
    """Relative name in the model directory → the file it is copied from (requirements.txt aside)."""
    package = _package()
    sources = {f"{CODE_DIR}/inference.py": Path(__file__).with_name("inference.py")}
    sources.update({f"{CODE_DIR}/{package.name}/{name}": package / name for name in PACKAGE_MODULES})
    return sources


def serving_files() -> dict:
    """Every file `write_serving_code` writes, with the recogniser of a previous run's copy."""
    from titanic_lightning.outputs import is_serving_code

    return {name: is_serving_code for name in (*_sources(), f"{CODE_DIR}/requirements.txt")}


def write_serving_code(model_dir: Path) -> Path:
    """Write `model_dir/code/` (inference.py, titanic_lightning/, requirements.txt); return it."""
    from titanic_lightning.atomic import atomic_output, remove_stale_partials, write_text

    code = Path(model_dir) / CODE_DIR
    for name, source in _sources().items():
        target = Path(model_dir) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(target.parent)
        with atomic_output(target) as tmp:
            tmp.write_bytes(source.read_bytes())
    write_text(code / "requirements.txt", "\n".join((REQUIREMENTS_HEADER, *REQUIREMENTS)) + "\n")
    return code

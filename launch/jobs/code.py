"""Stage the code a training job ships: `titanic_lightning/`, `entry/` and a requirements.txt of pyproject.toml's
bounds (also staged as `titanic_lightning/dependencies.txt`: the container has no pyproject.toml). The SDK uploads
it as the `code` channel, the entry script's working directory, which the job puts on PYTHONPATH."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from launch.jobs import wheelhouse as wheels
from titanic_lightning import dependencies
from titanic_lightning.sagemaker_facts import OPT_ML

PACKAGES = ("titanic_lightning", "entry")
ENTRY_SCRIPT = "entry/train.py"
REQUIREMENTS_FILE = "requirements.txt"
CODE_CHANNEL = "code"  # sagemaker.train.constants.SM_CODE
CODE_DIR_IN_CONTAINER = f"{OPT_ML}/input/data/{CODE_CHANNEL}"  # sagemaker.train.constants.SM_CODE_CONTAINER_PATH

# The PyTorch training image already has torch (and numpy, pandas); listing torch here could make
# pip replace the image's CUDA build, so it is left out: Lightning's own torch>=2.1 is satisfied.
REQUIRED = ("lightning", "torchmetrics", "jsonargparse", "scikit-learn", "pandas", "matplotlib", "tensorboard")


def package_dir(package: str) -> Path:
    """Where `package` is imported from: a checkout, or site-packages when the project is installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"the package {package} is not importable; install the project (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def requirements() -> list[str]:
    """What the job installs at start-up: the declared bounds of `REQUIRED`."""
    return dependencies.bounds(REQUIRED)


def stage(dest: Path, wheelhouse: bool = False) -> Path:
    """Copy the shipped code into `dest` (created) and return it; with `wheelhouse`, its
    requirements.txt installs from the job's wheels channel with no index."""
    for package in PACKAGES:
        shutil.copytree(package_dir(package), dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    lines = wheels.requirements_lines(requirements()) if wheelhouse else requirements()
    (dest / REQUIREMENTS_FILE).write_text("\n".join(lines) + "\n")
    (dest / dependencies.PACKAGE.name / dependencies.STAGED.name).write_text("\n".join(dependencies.declared()) + "\n")
    return dest

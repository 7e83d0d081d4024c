"""Stage the code a training job ships: `titanic_lightning/`, `entry/` and a requirements.txt.

The SDK uploads this folder as the job's `code` channel; in the container it lands at
`/opt/ml/input/data/code`, which is also the working directory of the entry script. Because the
script runs by path (`python entry/train.py`), the package is found through PYTHONPATH, which the
job sets to that folder (`CODE_DIR_IN_CONTAINER`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from titanic_lightning.sagemaker_facts import OPT_ML

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("titanic_lightning", "entry")
ENTRY_SCRIPT = "entry/train.py"
REQUIREMENTS_FILE = "requirements.txt"
CODE_DIR_IN_CONTAINER = f"{OPT_ML}/input/data/code"  # sagemaker.train.constants.SM_CODE_CONTAINER_PATH

# The PyTorch training image already has torch (and numpy, pandas); listing torch here could make
# pip replace the image's CUDA build, so it is left out: Lightning's own torch>=2.1 is satisfied.
REQUIREMENTS = (
    "lightning>=2.6,<2.7",
    "torchmetrics>=1.7",
    "jsonargparse[signatures]>=4.32",
    "scikit-learn>=1.4",
    "pandas>=2.1",
    "matplotlib>=3.8",
    "tensorboard>=2.15",
)


def stage(dest: Path) -> Path:
    """Copy the shipped code into `dest` (created) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    (dest / REQUIREMENTS_FILE).write_text("\n".join(REQUIREMENTS) + "\n")
    return dest

"""The `code/` folder of a model directory: what a SageMaker PyTorch serving container runs.

`write_serving_code(model_dir)` puts into `model_dir/code/`:

* `inference.py` — the handler (`model_fn`, `input_fn`, `predict_fn`, `output_fn`), this package's
  `serving/inference.py`;
* `titanic_lightning/` — copies of the modules the handler needs (scoring, features, network,
  artifacts, errors), so the container scores rows exactly as `entry.predict` does without this
  project being installed;
* `requirements.txt` — what the PyTorch serving image lacks; the container installs it at start.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CODE_DIR = "code"
# The handler's imports, followed to their closure; tests/test_serving.py imports them with only
# code/ and site-packages on sys.path, so a module missing here fails there.
PACKAGE_MODULES = ("__init__.py", "errors.py", "features.py", "network.py", "artifacts.py", "scoring.py")
# Bounds as in pyproject's dependencies. torch comes with the image and must not be reinstalled.
REQUIREMENTS = ("numpy>=1.26", "pandas>=2.1")


def write_serving_code(model_dir: Path) -> Path:
    """Create `model_dir/code/` (inference.py, titanic_lightning/, requirements.txt); return it."""
    package = Path(__file__).resolve().parents[1]
    code = Path(model_dir) / CODE_DIR
    (code / package.name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("inference.py"), code / "inference.py")
    for name in PACKAGE_MODULES:
        shutil.copyfile(package / name, code / package.name / name)
    (code / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n")
    return code

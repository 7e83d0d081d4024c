"""One small model trained on the real data, shared by the predict, serving and export tests.

Each test module wraps `trained_model_dir` in a fixture; training runs once per session (three
epochs, through `python -m entry.train`, so the model directory is exactly what the command writes).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_entry

_CACHE: dict[str, Path] = {}


def trained_model_dir(tmp_path_factory, prepared: Path) -> Path:
    if "model" not in _CACHE:
        root = tmp_path_factory.mktemp("trained")
        result = run_entry(
            "train", "--train", str(prepared / "train_data.npz"), "--val", str(prepared / "val_data.npz"),
            "--test", str(prepared / "test_data.npz"), "--model_dir", str(root / "model"),
            "--output_dir", str(root / "outputs"), "--epochs", "3", cwd=root,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        _CACHE["model"] = root / "model"
    return _CACHE["model"]


def pack(model_dir: Path, archive: Path) -> Path:
    """model.tar.gz as SageMaker packs /opt/ml/model: the directory's contents under ./"""
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(model_dir, arcname=".")
    return archive

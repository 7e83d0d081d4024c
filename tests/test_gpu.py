"""GPU checks: run where CUDA is present, skipped with the reason elsewhere (`scripts/gpu_check.sh`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.helpers import check_probe, clean_env, finish_all, id_channels, run_entry, start, train_args

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_gpu = pytest.mark.skipif(GPUS < 1, reason="needs a CUDA device; none is visible")


@needs_gpu
def test_one_gpu_training_by_default(tmp_path, prepared):
    for name in ("train_data.npz", "val_data.npz", "test_data.npz", "preprocessing.json"):
        shutil.copy(prepared / name, tmp_path / name)
    result = run_entry("train", "--train", "train_data.npz", "--val", "val_data.npz", "--test", "test_data.npz",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["accelerator"] == "gpu" and metrics["world_size"] == 1 and metrics["test_acc"] > 0.75


@pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA devices; {GPUS} visible")
def test_two_gpu_ddp_trains_one_model(tmp_path):
    channels, probe = id_channels(tmp_path / "data"), tmp_path / "probe"
    probe.mkdir()
    argv = ["-m", "entry.train", *train_args(channels, "--devices", "2", "--model_dir", str(tmp_path / "model"),
                                             "--output_dir", str(tmp_path / "out"))]
    [(code, out)] = finish_all([start(argv, clean_env(PROBE_DIR=str(probe)), tmp_path)])
    assert code == 0, out[-3000:]
    assert "accelerator=gpu" in out and "backend=nccl" in out
    check_probe(probe, tmp_path / "model", channels)

"""Interrupted runs resume where they stopped and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import clean_env, write_channel
from tests.test_distributed import free_port, sagemaker_host_env

pytestmark = pytest.mark.slow
EPOCHS = 150


@pytest.fixture
def channels(tmp_path) -> dict[str, Path]:
    return {split: write_channel(tmp_path / "data" / f"{split}_data.npz", split, rows=rows, seed=i)
            for i, (split, rows) in enumerate((("train", 64), ("val", 32)))}


def args(channels, run: Path) -> list[str]:
    return ["--train", str(channels["train"]), "--val", str(channels["val"]), "--epochs", str(EPOCHS),
            "--early_stopping", "false", "--batch_size", "16", "--hidden_sizes", "[16, 8]", "--dropout", "0.2",
            "--model_dir", str(run / "model"), "--output_dir", str(run / "out"), "--checkpoint_dir", str(run / "ckpt")]


def popen(argv, env, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "entry.train", *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_epoch(proc: subprocess.Popen, epoch: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"the run ended before epoch {epoch}: {proc.stderr.read()[-2000:]}")
        if line.startswith(f"epoch={epoch};"):
            return
    pytest.fail(f"epoch {epoch} never came")


def complete(argv, env, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "entry.train", *argv], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_result(a: Path, b: Path) -> None:
    first, second = (torch.load(run / "model" / "model.pt", weights_only=True) for run in (a, b))
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(second["state_dict"][key], value, rtol=0, atol=1e-6)
    metrics = [json.loads((run / "model" / "metrics.json").read_text()) for run in (a, b)]
    for key in ("val_loss", "val_acc", "val_auroc", "best_epoch", "epochs_run"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6), key


def epochs_printed(stdout: str) -> list[int]:
    return [int(line.split(";")[0].split("=")[1]) for line in stdout.splitlines() if line.startswith("epoch=")]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, channels, sig):
    env = clean_env()
    complete(args(channels, tmp_path / "whole"), env, tmp_path)

    run = tmp_path / "interrupted"
    proc = popen(args(channels, run), env, tmp_path)
    wait_for_epoch(proc, 40)
    proc.send_signal(sig)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert proc.returncode != 0
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert (run / "ckpt" / "last.ckpt").is_file() and not (run / "model").exists()
    done = torch.load(run / "ckpt" / "last.ckpt", weights_only=True)["epoch"] + 1
    assert 39 <= done < EPOCHS  # epoch 40 was printed just before its checkpoint was written

    resumed = complete(args(channels, run), env, tmp_path)
    assert f"{done} epoch(s) already done" in resumed.stderr
    assert epochs_printed(resumed.stdout)[0] == done + 1  # finished epochs are not repeated
    assert epochs_printed(resumed.stdout)[-1] == EPOCHS
    assert_same_result(tmp_path / "whole", run)


def test_two_hosts_killed_together_resume_to_the_same_weights(tmp_path, channels):
    def hosts(run: Path, probe: Path, port: int):
        procs = []
        for host in ("algo-1", "algo-2"):
            env = sagemaker_host_env(host, run, port, probe)
            procs.append(popen(args(channels, run / host), env, tmp_path))
        return procs

    for name in ("whole", "interrupted"):
        (tmp_path / name / "probe").mkdir(parents=True)
    for proc in hosts(tmp_path / "whole", tmp_path / "whole" / "probe", free_port()):
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]

    run = tmp_path / "interrupted"
    procs = hosts(run, run / "probe", free_port())
    wait_for_epoch(procs[0], 30)
    for proc in procs:  # a spot reclaim takes every instance
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    # SageMaker restores the checkpoint directory on every instance; rank 0 wrote it here.
    done = torch.load(run / "algo-1" / "ckpt" / "last.ckpt", weights_only=True)["epoch"] + 1
    (run / "algo-2" / "ckpt").mkdir(parents=True, exist_ok=True)
    for item in (run / "algo-1" / "ckpt").iterdir():
        (run / "algo-2" / "ckpt" / item.name).write_bytes(item.read_bytes())
    procs = hosts(run, run / "probe", free_port())
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert epochs_printed(outputs[0][0])[0] == done + 1
    assert_same_result(tmp_path / "whole" / "algo-1", run / "algo-1")


def test_checkpoint_from_other_settings_is_refused(tmp_path, channels):
    env = clean_env()
    first = args(channels, tmp_path / "run")
    first[first.index("--epochs") + 1] = "2"
    complete(first, env, tmp_path)
    changed = args(channels, tmp_path / "run")
    changed[changed.index("--hidden_sizes") + 1] = "[4]"
    result = subprocess.run([sys.executable, "-m", "entry.train", *changed], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and "Traceback" not in result.stderr
    assert "last.ckpt was written with hidden_sizes=[16, 8] but this run has hidden_sizes=[4]" in last_line


def test_truncated_checkpoint_is_a_clear_error(tmp_path, channels):
    ckpt = tmp_path / "run" / "ckpt"
    ckpt.mkdir(parents=True)
    (ckpt / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    result = subprocess.run([sys.executable, "-m", "entry.train", *args(channels, tmp_path / "run")], env=clean_env(),
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "last.ckpt: not a readable checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "model").exists()

"""SIGTERM and Ctrl-C at the moments the training tests do not reach: while a command starts, during
training with nowhere to keep a checkpoint, and while the launcher prepares a local job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env, write_channel


def _handles(pid: int, sig: int) -> bool:
    """Whether process `pid` has installed a handler for `sig` (the SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (sig - 1)))


@pytest.fixture
def channels(tmp_path) -> list[str]:
    paths = [write_channel(tmp_path / "in" / f"{split}_data.npz", split, rows=rows, seed=i)
             for i, (split, rows) in enumerate((("train", 4000), ("val", 200)))]
    return ["--train", str(paths[0]), "--val", str(paths[1])]


def _train(channels: list[str], tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = clean_env(SM_OUTPUT_FAILURE=str(tmp_path / "failure"))
    return subprocess.Popen([sys.executable, "-m", "entry.train", *channels, "--batch_size", "8",
                             "--early_stopping", "false", "--epochs", "1000", *extra],
                            cwd=tmp_path / "cwd", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_while_the_command_starts_is_one_line_and_a_failure_reason(tmp_path, channels):
    (tmp_path / "cwd").mkdir()
    proc = _train(channels, tmp_path)
    deadline = time.monotonic() + 60
    while not _handles(proc.pid, signal.SIGTERM) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # the command's own handler is in place; training is seconds away
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: stopped by SIGTERM" and "Traceback" not in err
    assert (tmp_path / "failure").read_text() == "error: stopped by SIGTERM\n"
    assert "epoch=" not in out and list((tmp_path / "cwd").iterdir()) == []


def test_sigterm_during_training_without_a_checkpoint_folder_says_nothing_was_kept(tmp_path, channels):
    (tmp_path / "cwd").mkdir()
    proc = _train(channels, tmp_path, "--model_dir", "m", "--output_dir", "o")
    first = proc.stdout.readline()
    assert first.startswith("epoch=1;"), proc.stderr.read() if proc.poll() is not None else first
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("error: stopped by SIGTERM; no --checkpoint_dir was given, so nothing "
                                            "was kept to resume from")
    assert not (tmp_path / "cwd" / "m").exists()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rank 0", "rank 1", "every process"])
def test_sigterm_under_two_processes_stops_both_at_once_with_the_checkpoint(target, tmp_path, channels):
    """Lightning's own handler broadcasts inside the signal handler; under DDP that hangs until the
    process-group timeout (here 300 s). Whichever rank gets the signal, both stop within seconds."""
    (tmp_path / "cwd").mkdir()
    env = clean_env(SM_OUTPUT_FAILURE=str(tmp_path / "failure"))
    proc = subprocess.Popen([sys.executable, "-m", "entry.train", *channels, "--batch_size", "8", "--epochs", "1000",
                             "--early_stopping", "false", "--cpu_processes", "2", "--checkpoint_dir", "ck",
                             "--process_group_timeout", "300"],
                            cwd=tmp_path / "cwd", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first = proc.stdout.readline()
    assert first.startswith("epoch=1;"), proc.stderr.read() if proc.poll() is not None else first
    (rank1,) = _children(proc.pid)
    if target == "every process":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        os.kill(proc.pid if target == "rank 0" else rank1, signal.SIGTERM)
    started = time.monotonic()
    _, err = proc.communicate(timeout=90)  # both ranks hold the pipes: EOF means both have ended
    assert proc.returncode == 143, err
    assert time.monotonic() - started < 60, err
    assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM; the last checkpoint is in ck"), err
    assert "Traceback" not in err and "RuntimeError" not in err, err
    assert (tmp_path / "cwd" / "ck" / "last.ckpt").is_file()
    assert not Path(f"/proc/{rank1}").exists() or "Z" in Path(f"/proc/{rank1}/stat").read_text().split()[2]


@pytest.mark.parametrize("command", ["train", "predict"])
def test_sigterm_while_a_file_is_read_is_a_stop_not_a_damaged_file(command, tmp_path, prepared, monkeypatch, capsys):
    """A stop that lands inside torch.load must not be reported as an unreadable checkpoint or model."""
    import torch

    from entry.predict import main as predict
    from entry.train import main as train
    from tests.helpers import invoke
    from titanic_lightning.errors import Terminated

    paths = [write_channel(tmp_path / f"{split}_data.npz", split, rows=40, seed=i)
             for i, split in enumerate(("train", "val"))]
    monkeypatch.chdir(tmp_path)
    argv = ["--train", str(paths[0]), "--val", str(paths[1]), "--epochs", "1", "--checkpoint_dir", "ck"]
    code, _, err = invoke(train, argv, capsys)
    assert code == 0, err

    def stopped(*args, **kwargs):
        raise Terminated("stopped by SIGTERM")

    monkeypatch.setattr(torch, "load", stopped)
    if command == "train":
        code, _, err = invoke(train, argv, capsys)
    else:
        code, _, err = invoke(predict, ["--model", "model", "--csv", str(prepared / "test_passengers.csv")], capsys)
    assert code == 143 and err.strip().splitlines()[-1] == "error: stopped by SIGTERM", err


@pytest.mark.parametrize("delay", [0.3, 0.8])
def test_ctrl_c_while_the_launcher_prepares_a_local_job(delay, tmp_path, prepared):
    command = [sys.executable, str(REPO / "launch" / "submit.py"), "--local", "--json", "--data", str(prepared),
               "--jobs-dir", "jobs", "--hp", "epochs=300", "--hp", "early_stopping=false"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    # Before the hosts started: no job at all; after: the job is Stopped, never Completed.
    assert err.strip().splitlines()[-1] == "error: interrupted" or '"status": "Stopped"' in out, out + err[-2000:]
    assert '"status": "Completed"' not in out

"""Interrupted runs resume where they stopped and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from launch.jobs.container import free_port
from tests.helpers import clean_env, sagemaker_host_env, submit_command, submit_env, submit_subprocess, write_channel
from titanic_lightning.config import TrainConfig
from titanic_lightning.data.channels import training_data_sha256
from titanic_lightning.errors import Terminated, UsageError
from titanic_lightning.io.atomic import PARTIAL_MARK
from titanic_lightning.io.outputs import RECORD
from titanic_lightning.training import checkpoints as resume
from titanic_lightning.training import layout
from titanic_lightning.training import train as training_run
from titanic_lightning.training.callbacks import BestWeights, MetricPrinter, find_callback
from titanic_lightning.training.cluster import make_plan

pytestmark = pytest.mark.slow
EPOCHS = 150
BATCHES_PER_EPOCH = 4  # 64 rows, batch size 16


@pytest.fixture(scope="module")
def channels(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("channels")
    return {split: write_channel(root / f"{split}_data.npz", split, rows=rows, seed=i)
            for i, (split, rows) in enumerate((("train", 64), ("val", 32)))}


def args(channels, run: Path, *extra: str) -> list[str]:
    return ["--train", str(channels["train"]), "--val", str(channels["val"]), "--epochs", str(EPOCHS),
            "--early_stopping", "false", "--batch_size", "16", "--hidden_sizes", "[16, 8]", "--dropout", "0.2",
            "--model_dir", str(run / "model"), "--output_dir", str(run / "out"), "--checkpoint_dir", str(run / "ckpt"),
            *extra]


def popen(argv, env, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "entry.train", *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(stream, prefix: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"the run ended before printing {prefix!r}")
        if line.startswith(prefix):
            return
    pytest.fail(f"{prefix!r} never came")


def interrupted(argv, env, cwd, sig: int, after: str = "epoch=40;") -> tuple[subprocess.Popen, str, float]:
    """Start a run, send it `sig` once it prints `after`; return (process, stderr, seconds it took to end)."""
    proc = popen(argv, env, cwd)
    wait_for_line(proc.stdout, after, proc)
    proc.send_signal(sig)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    return proc, stderr, time.monotonic() - sent


def complete(argv, env, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "entry.train", *argv], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_same_model(first: dict, second: dict) -> None:
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(second["state_dict"][key], value, rtol=0, atol=1e-6)


def assert_same_result(a: Path, b: Path) -> None:
    assert_same_model(*(torch.load(run / "model" / "model.pt", weights_only=True) for run in (a, b)))
    metrics = [json.loads((run / "model" / "metrics.json").read_text()) for run in (a, b)]
    for key in ("val_loss", "val_acc", "val_auroc", "best_epoch", "epochs_run"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6), key


def epoch_lines(stdout: str) -> dict[int, str]:
    return {int(line.split(";")[0].split("=")[1]): line for line in stdout.splitlines() if line.startswith("epoch=")}


def saved_position(checkpoint: Path) -> tuple[int, int, int]:
    """(epochs done, batches of the next epoch done, global step) recorded in a checkpoint."""
    state = torch.load(checkpoint, weights_only=True)
    loader = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    return loader["epoch"], loader["batches_done"], state["global_step"]


def assert_resumed_like_whole(whole_stdout: str, resumed_stdout: str, epochs_done: int) -> None:
    """Finished epochs are not repeated, and every epoch line after the stop is the uninterrupted run's."""
    whole, resumed = epoch_lines(whole_stdout), epoch_lines(resumed_stdout)
    assert min(resumed) == epochs_done + 1 and max(resumed) == EPOCHS
    differing = [k for k in sorted(resumed) if resumed[k] != whole[k]]
    assert not differing, f"after {epochs_done} epochs:\n{whole[differing[0]]}\n{resumed[differing[0]]}"


@pytest.fixture(scope="module")
def whole_run(channels, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole")
    return run, complete(args(channels, run), clean_env(), run)


# --- every stopping point, in process ------------------------------------------------------------


class SigtermAt(Callback):
    """Sends this process a real SIGTERM at one point of the run (hook name, global step)."""

    def __init__(self, hook: str, step: int):
        self.hook, self.step = hook, step

    def _maybe(self, trainer, hook):
        if hook == self.hook and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, *args):
        self._maybe(trainer, "batch")

    def on_validation_end(self, trainer, *args):
        self._maybe(trainer, "validation")


def _fit(channels, run: Path, monkeypatch, extra_callback=None, every_n_seconds=None):
    cfg = TrainConfig(train=str(channels["train"]), val=str(channels["val"]), epochs=4, batch_size=16,
                      hidden_sizes=[16, 8], dropout=0.3, early_stopping=False, model_dir=str(run / "model"),
                      output_dir=str(run / "out"), checkpoint_dir=str(run / "ckpt"),
                      checkpoint_every_n_seconds=every_n_seconds)
    build = training_run.build

    def build_with_extra(*a):
        datamodule, model, trainer = build(*a)
        if extra_callback is not None:
            trainer.callbacks.append(extra_callback)
        return datamodule, model, trainer

    monkeypatch.setattr(training_run, "build", build_with_extra)
    training_run.quiet_lightning(cfg.debug)  # as train() does: Lightning's notes on reused folders go
    try:
        with ExitStack() as held:  # as train() does: the folders held, and their files recorded at the end
            _, model, trainer = training_run.fit(cfg, layout.resolve(cfg, held), make_plan(0))
    finally:
        monkeypatch.setattr(training_run, "build", build)
    return model, trainer


def _outcome(model, trainer) -> tuple[dict, int | None, int, list[dict]]:
    """(weights, best epoch, steps, the epoch history curves.png is drawn from)."""
    best = find_callback(trainer, BestWeights).best_epoch
    history = find_callback(trainer, MetricPrinter).history
    return {"state_dict": model.net.state_dict()}, best, trainer.global_step, history


def test_every_stopping_point_resumes_exactly(tmp_path, channels, monkeypatch, capsys):
    """A timed checkpoint after any batch, and SIGTERM after any batch or validation, resume exactly."""
    reference = _outcome(*_fit(channels, tmp_path / "whole", monkeypatch))
    reference_lines = epoch_lines(capsys.readouterr().out)
    total_steps = reference[2]
    assert total_steps == 4 * BATCHES_PER_EPOCH

    # A checkpoint every "0 seconds" is one after every batch; keep a copy of each.
    copies = []
    save = resume.SameFolderCheckpointIO.save_checkpoint

    def save_and_copy(self, checkpoint, path, storage_options=None):
        save(self, checkpoint, path, storage_options)
        copies.append(tmp_path / "copies" / str(len(copies)))
        copies[-1].mkdir(parents=True)
        shutil.copy(path, copies[-1] / "last.ckpt")

    monkeypatch.setattr(resume.SameFolderCheckpointIO, "save_checkpoint", save_and_copy)
    _fit(channels, tmp_path / "timed", monkeypatch, every_n_seconds=1e-9)
    monkeypatch.undo()
    positions = {saved_position(c / "last.ckpt")[2] for c in copies}
    assert positions == set(range(1, total_steps + 1))  # mid-epoch and epoch-end saves alike
    starts = [(f"timed save {i + 1}", c) for i, c in enumerate(copies)]

    for hook, steps in (("batch", range(1, total_steps + 1)), ("validation", range(4, total_steps + 1, 4))):
        for step in steps:
            run = tmp_path / f"{hook}-{step}"
            with pytest.raises(Terminated, match="stopped by SIGTERM; the last checkpoint is in .*: run the same command "
                                                 "again to resume from it"):
                _fit(channels, run, monkeypatch, extra_callback=SigtermAt(hook, step))
            assert saved_position(run / "ckpt" / "last.ckpt")[2] == step  # the stop itself was saved
            starts.append((f"SIGTERM after {hook} {step}", run / "ckpt"))
    capsys.readouterr()

    for name, checkpoint_dir in starts:
        epochs_done, batches_done, _ = saved_position(checkpoint_dir / "last.ckpt")
        run = tmp_path / "resumed" / name.replace(" ", "-")
        shutil.copytree(checkpoint_dir, run / "ckpt")
        outcome = _outcome(*_fit(channels, run, monkeypatch))
        assert_same_model(reference[0], outcome[0])
        assert outcome[1:3] == reference[1:3], name
        assert [row["epoch"] for row in outcome[3]] == [1, 2, 3, 4], name  # epochs before the stop included
        for row, expected in zip(outcome[3], reference[3]):
            assert row == pytest.approx(expected, abs=1e-6), name
        lines = epoch_lines(capsys.readouterr().out)
        assert sorted(lines) == list(range(epochs_done + 1, 5)), name  # no finished epoch is run again
        assert lines == {k: reference_lines[k] for k in lines}, name  # train_loss of a split epoch included


def test_a_mid_epoch_checkpoint_from_another_number_of_processes_is_refused(tmp_path, channels, monkeypatch):
    run = tmp_path / "run"
    with pytest.raises(Terminated):
        _fit(channels, run, monkeypatch, extra_callback=SigtermAt("batch", 6))
    checkpoint = torch.load(run / "ckpt" / "last.ckpt", weights_only=True)
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": 2, "world_size": 1}]
    checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["world_size"] = 2
    torch.save(checkpoint, run / "ckpt" / "last.ckpt")
    with pytest.raises(UsageError, match=re.escape(
            f"{run / 'ckpt' / 'last.ckpt'} was saved inside epoch 2 by 2 process(es) and this run has 1; resume with 2")):
        _fit(channels, run, monkeypatch)


def test_a_checkpoint_is_written_beside_its_target_and_renamed_into_place(tmp_path, channels, monkeypatch):
    """Not staged in the system temp folder: a move from there onto another file system is a copy,
    and a kill during the copy would truncate last.ckpt."""
    model, trainer = _fit(channels, tmp_path / "run", monkeypatch)
    assert isinstance(trainer.strategy.checkpoint_io, resume.SameFolderCheckpointIO)
    target = tmp_path / "run" / "ckpt" / "last.ckpt"
    before = target.read_bytes()

    written_to = []

    def killed_while_writing(obj, path, *args, **kwargs):
        written_to.append(Path(path))
        Path(path).write_bytes(before[: len(before) // 2])
        raise KeyboardInterrupt  # stands in for the process dying halfway through the write

    monkeypatch.setattr(torch, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        trainer.strategy.checkpoint_io.save_checkpoint({"state_dict": model.state_dict()}, target)
    monkeypatch.undo()
    assert written_to[0].parent == target.parent and written_to[0] != target
    assert target.read_bytes() == before  # the previous checkpoint, whole
    assert sorted(p.name for p in target.parent.iterdir()) == [RECORD, "last.ckpt"]  # the partial file is gone


# --- a real process stopped by a signal ------------------------------------------------------------


def test_sigterm_saves_the_run_and_it_resumes_to_the_same_weights(tmp_path, channels, whole_run):
    """No periodic checkpoint is due in 1000 epochs: what survives the stop is the save SIGTERM made."""
    env, run = clean_env(), tmp_path / "interrupted"
    argv = args(channels, run, "--checkpoint_every_n_epochs", "1000")
    proc, stderr, seconds = interrupted(argv, env, tmp_path, signal.SIGTERM)
    assert seconds < 30
    assert proc.returncode == 143 and "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    assert not (run / "model").exists()
    epochs_done, batches_done, step = saved_position(run / "ckpt" / "last.ckpt")
    assert step >= 40 * BATCHES_PER_EPOCH and step == epochs_done * BATCHES_PER_EPOCH + batches_done

    resumed = complete(argv, env, tmp_path)
    described = f"{epochs_done} epoch(s) already done" + (
        f", and {batches_done} batch(es) of epoch {epochs_done + 1}" if batches_done else "")
    assert f"resuming from {run / 'ckpt' / 'last.ckpt'}: {described}" in resumed.stderr
    assert_resumed_like_whole(whole_run[1].stdout, resumed.stdout, epochs_done)
    assert_same_result(whole_run[0], run)


def test_sigkill_resumes_from_the_last_timed_checkpoint(tmp_path, channels, whole_run):
    """Checkpoints every 0.2 s land inside epochs too; SIGKILL leaves the last one whole."""
    env, run = clean_env(), tmp_path / "interrupted"
    argv = args(channels, run, "--checkpoint_every_n_seconds", "0.2")
    proc, _, _ = interrupted(argv, env, tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and not (run / "model" / "model.pt").exists()
    epochs_done, _, step = saved_position(run / "ckpt" / "last.ckpt")
    assert 39 * BATCHES_PER_EPOCH <= step < EPOCHS * BATCHES_PER_EPOCH
    cut = run / "ckpt" / f".last.ckpt.{proc.pid}-0badc0de.partial"  # a write the kill cut short
    cut.write_bytes(b"PK")
    os.setxattr(cut, PARTIAL_MARK, b"partial")

    resumed = complete(argv, env, tmp_path)
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == [RECORD, "last.ckpt"]  # the partial file was cleared
    assert_resumed_like_whole(whole_run[1].stdout, resumed.stdout, epochs_done)
    assert_same_result(whole_run[0], run)


def test_two_hosts_killed_together_resume_to_the_same_weights(tmp_path, channels):
    def hosts(run: Path, probe: Path, port: int):
        procs = []
        for host in ("algo-1", "algo-2"):
            env = sagemaker_host_env(host, run, port, probe)
            procs.append(popen(args(channels, run / host), env, tmp_path))
        return procs

    for name in ("whole", "interrupted"):
        (tmp_path / name / "probe").mkdir(parents=True)
    procs = hosts(tmp_path / "whole", tmp_path / "whole" / "probe", free_port())
    whole = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], whole[0][1][-3000:]

    run = tmp_path / "interrupted"
    procs = hosts(run, run / "probe", free_port())
    wait_for_line(procs[0].stdout, "epoch=30;", procs[0])
    for proc in procs:  # a spot reclaim takes every instance
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    # SageMaker restores the checkpoint directory on every instance; rank 0 wrote it here.
    epochs_done, _, _ = saved_position(run / "algo-1" / "ckpt" / "last.ckpt")
    shutil.copytree(run / "algo-1" / "ckpt", run / "algo-2" / "ckpt", dirs_exist_ok=True)
    procs = hosts(run, run / "probe", free_port())
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert_resumed_like_whole(whole[0][0], outputs[0][0], epochs_done)
    assert_same_result(tmp_path / "whole" / "algo-1", run / "algo-1")


def test_two_hosts_stopped_inside_an_epoch_resume_to_the_same_weights(tmp_path, channels):
    """SIGTERM lands on both ranks after step 61, halfway through epoch 31 (2 steps per epoch each)."""
    def hosts(run: Path, *extra: str, **env: str):
        port = free_port()
        return [popen(args(channels, run / host, *extra), {**sagemaker_host_env(host, run, port, run), **env}, tmp_path)
                for host in ("algo-1", "algo-2")]

    run = tmp_path / "interrupted"
    run.mkdir()
    stop = ("--checkpoint_every_n_epochs", "1000", "--strategy", "tests.ddp_probe:sigterm_factory")
    procs = hosts(run, *stop, STOP_AT_STEP="61")
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outputs[0][1][-3000:]
    # Only the stop wrote a checkpoint; SageMaker would restore it on every instance.
    assert saved_position(run / "algo-1" / "ckpt" / "last.ckpt") == (30, 1, 61)
    shutil.copytree(run / "algo-1" / "ckpt", run / "algo-2" / "ckpt")

    whole_procs = hosts(tmp_path / "whole")
    procs = hosts(run)
    whole, resumed = ([p.communicate(timeout=300) for p in group] for group in (whole_procs, procs))
    assert [p.returncode for p in whole_procs + procs] == [0, 0, 0, 0], resumed[0][1][-3000:]
    assert "30 epoch(s) already done, and 1 batch(es) of epoch 31" in resumed[0][1]
    # Epoch 31's train_loss is its mean over both ranks' batches, before and after the stop.
    assert_resumed_like_whole(whole[0][0], resumed[0][0], 30)
    assert_same_result(tmp_path / "whole" / "algo-1", run / "algo-1")


def _model_in(artifact: str) -> tuple[dict, dict]:
    with tarfile.open(artifact) as tar:
        model = torch.load(io.BytesIO(tar.extractfile("model.pt").read()), weights_only=True)
        return model, json.load(tar.extractfile("metrics.json"))


def test_emulated_two_host_job_stopped_and_resumed(tmp_path, channels):
    """`launch/submit.py --local --instance-count 2`: stopped with SIGTERM, `--resume JOB` finishes the job."""
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        shutil.copy(channels[split], data)
    write_channel(data / "test_data.npz", "test", rows=32, seed=2)
    hp = ["--hp", f"epochs={EPOCHS}", "--hp", "early_stopping=false", "--hp", "batch_size=16", "--hp", "dropout=0.2"]
    command = ["--local", "--json", "--instance-count", "2", "--data", str(data), *hp]

    whole = submit_subprocess([*command, "--jobs-dir", "whole-jobs"], cwd=tmp_path, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    whole_summary = json.loads(whole.stdout.strip().splitlines()[-1])

    interrupted = [*command, "--jobs-dir", "jobs"]
    proc = subprocess.Popen(submit_command(interrupted), cwd=tmp_path, env=submit_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_line(proc.stderr, "[algo-1] epoch=30;", proc)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    stdout, _ = proc.communicate(timeout=120)
    assert time.monotonic() - sent < 30
    stopped = json.loads(stdout.strip().splitlines()[-1])
    assert proc.returncode == 143 and stopped["status"] == "Stopped" and stopped["stopped_by_signal"] == "SIGTERM"
    assert f"add --resume {stopped['job_name']} to the command" in stopped["failure_reason"]
    assert stopped["model_artifact"] is None
    store = Path(stopped["checkpoints"])
    assert store == tmp_path / "jobs" / stopped["job_name"] / "checkpoints"  # the job's own store
    epochs_done, _, _ = saved_position(store / "last.ckpt")
    assert 30 <= epochs_done < EPOCHS

    again = submit_subprocess([*interrupted, "--resume", stopped["job_name"]], cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["status"] == "Completed" and summary["resumed_from"] == stopped["job_name"]
    assert summary["checkpoints"] == str(tmp_path / "jobs" / summary["job_name"] / "checkpoints")
    assert f"checkpoints of {stopped['job_name']} ({store}) restored on every host" in again.stderr
    assert saved_position(store / "last.ckpt")[0] == epochs_done  # the stopped job's store is left as it was
    logs = [Path(h["log"]).read_text() for h in (whole_summary["hosts"][0], summary["hosts"][0])]
    assert re.search(rf"resuming from \S+/algo-1/checkpoints/last.ckpt: {epochs_done} epoch\(s\) already done", logs[1])
    assert_resumed_like_whole(logs[0], logs[1], epochs_done)
    (first, first_metrics), (second, second_metrics) = (_model_in(s["model_artifact"]) for s in (whole_summary, summary))
    assert_same_model(first, second)
    assert second_metrics["world_size"] == 2
    for key in ("val_loss", "val_acc", "test_acc", "best_epoch", "epochs_run"):
        assert second_metrics[key] == pytest.approx(first_metrics[key], abs=1e-6), key
    # Time figures are the resumed process's own; the total includes the stopped job's training.
    assert second_metrics["fit_seconds"] <= second_metrics["wall_seconds"]
    assert second_metrics["fit_seconds_total"] > second_metrics["fit_seconds"]


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


def _metrics(run: Path) -> dict:
    return json.loads((run / "model" / "metrics.json").read_text())


def test_checkpoint_from_other_data_is_refused(tmp_path, channels):
    """The checkpoint records the train and val data's sha256; other data is refused before training."""
    env = clean_env()
    first = args(channels, tmp_path / "run")
    first[first.index("--epochs") + 1] = "2"
    complete(first, env, tmp_path)
    checkpoint = tmp_path / "run" / "ckpt" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    assert saved["data_sha256"] == training_data_sha256(channels["train"], channels["val"])
    before = checkpoint.read_bytes()

    other = write_channel(tmp_path / "other" / "train_data.npz", "train", rows=64, seed=9)
    changed = [*first]
    changed[changed.index("--train") + 1] = str(other)
    changed[changed.index("--model_dir") + 1] = str(tmp_path / "second-model")
    result = subprocess.run([sys.executable, "-m", "entry.train", *changed], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: {checkpoint}: the training data differs from the data this checkpoint was trained on")
    assert "epoch=" not in result.stdout  # refused before training
    assert not (tmp_path / "second-model").exists() and checkpoint.read_bytes() == before

    # A checkpoint that records no data identity cannot be shown to match: refused too.
    state = torch.load(checkpoint, weights_only=True)
    del state["datamodule_hyper_parameters"]["data_sha256"]
    torch.save(state, checkpoint)
    result = subprocess.run([sys.executable, "-m", "entry.train", *first], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {checkpoint}: records no training data identity (written by an older version), so it cannot be "
        "resumed safely; remove it or choose another --checkpoint_dir to train afresh")


def _rows_per_second_within_rounding(metrics: dict, rows: int) -> bool:
    """train_rows_per_second is rows / this run's fit time, given fit_seconds rounded to 0.001 s."""
    fit = metrics["fit_seconds"]
    return rows / (fit + 0.0005) * 0.999 <= metrics["train_rows_per_second"] <= rows / max(fit - 0.0005, 1e-6) * 1.001


def test_a_resumed_run_reports_its_own_time_and_the_total(tmp_path, channels):
    """fit_seconds and train_rows_per_second are this process's; fit_seconds_total adds the runs it resumed
    (Lightning's Timer restores its elapsed time from the checkpoint)."""
    env, run = clean_env(), tmp_path / "run"
    first = args(channels, run)
    first[first.index("--epochs") + 1] = "3"
    complete(first, env, tmp_path)
    before = _metrics(run)
    assert before["fit_seconds_total"] == before["fit_seconds"] <= before["wall_seconds"]
    assert _rows_per_second_within_rounding(before, 3 * 64)

    longer = [*first]
    longer[longer.index("--epochs") + 1] = "5"
    resumed = complete(longer, env, tmp_path)
    assert "3 epoch(s) already done" in resumed.stderr
    after = _metrics(run)
    assert after["epochs_run"] == 5
    assert after["fit_seconds"] <= after["wall_seconds"]
    # The checkpoint holds the training time up to its save, a little less than the first run's total.
    restored = after["fit_seconds_total"] - after["fit_seconds"]
    assert 0.5 * before["fit_seconds_total"] < restored <= before["fit_seconds_total"] + 0.002
    # 2 epochs here; fit_seconds is rounded to the millisecond, which moves a short run's rate by a few %.
    assert _rows_per_second_within_rounding(after, 2 * 64)

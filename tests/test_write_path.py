"""Commands that run at the same time, or after a stopped one, keep each other's and the user's files.

Real processes and real signals: two trainings on one folder, a training and a prepare on one data
folder, a SIGTERM'd or SIGKILL'd training followed by a new one, two trainings preparing ./data/ at
once; and the launcher's run records and names. Every process a test starts has ended when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import clean_env, write_channel
from tests.test_outputs import assert_kept, snapshot
from titanic_lightning.data.prepare import ROLE as PREPARE
from titanic_lightning.data.prepare import prepared_files
from titanic_lightning.errors import UsageError
from titanic_lightning.io import outputs


def slow(epochs: int, model_dir: str = "m", output_dir: str = "o") -> list[str]:
    """Flags of a run that takes a while: 8 steps an epoch, no early stop."""
    return ["--epochs", str(epochs), "--early_stopping", "false", "--hidden_sizes", "[8]", "--batch_size", "8",
            "--model_dir", model_dir, "--output_dir", output_dir]


@pytest.fixture
def data(tmp_path) -> Path:
    data = tmp_path / "data"
    for i, (split, rows) in enumerate((("train", 64), ("val", 24))):
        write_channel(data / f"{split}_data.npz", split, rows=rows, seed=i)
    return data


def channels(data: Path) -> list[str]:
    return ["--train", str(data / "train_data.npz"), "--val", str(data / "val_data.npz")]


def start(module: str, argv: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *argv], cwd=cwd, env=clean_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(module: str, argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, env=clean_env(**env), text=True,
                          capture_output=True, timeout=300)


def wait_for(proc: subprocess.Popen, prefix: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return
        if not line and proc.poll() is not None:
            pytest.fail(f"ended before {prefix!r}: {proc.stderr.read()[-2000:]}")
    pytest.fail(f"{prefix!r} never came")


def assert_gone(*procs: subprocess.Popen) -> None:
    """No process the test started (nor a child of one) is left: `ps` lists none of them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    listing = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    pids = {p.pid for p in procs}
    left = [line for line in listing if line.split() and ({int(x) for x in line.split()} & pids)]
    assert not left, left


def refused(result_code: int, err: str, *words: str) -> str:
    line = err.strip().splitlines()[-1]
    assert result_code == 2 and line.startswith("error: ") and "Traceback" not in err, err[-2000:]
    assert len([x for x in err.splitlines() if x.startswith("error")]) == 1, err
    for word in words:
        assert word in line, (word, line)
    return line


@pytest.mark.slow
def test_two_trainings_on_one_folder_one_runs_the_other_is_refused_before_it_trains(tmp_path, data):
    first = start("entry.train", [*channels(data), *slow(600)], tmp_path)  # still training when the second starts
    try:
        wait_for(first, "epoch=2;")
        second = run("entry.train", [*channels(data), *slow(3, output_dir="o2")], tmp_path)
        line = refused(second.returncode, second.stderr, "--model_dir m", f"pid {first.pid}", "entry.train")
        assert "epoch=" not in second.stdout, line
        assert not (tmp_path / "o2").exists()  # refused before any work: nothing made
        _, err = first.communicate(timeout=240)
        assert first.returncode == 0, err[-2000:]
    finally:
        assert_gone(first)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 600
    assert torch.load(tmp_path / "m" / "model.pt", weights_only=True)["metrics"] == metrics
    # The same command again replaces the files the first run wrote.
    again = run("entry.train", [*channels(data), *slow(4)], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["epochs_run"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_run_then_a_new_one_keeps_the_users_files(sig, tmp_path, data):
    (tmp_path / "o" / "csv").mkdir(parents=True)
    (tmp_path / "o" / "notes.txt").write_text("the user's notes\n")
    first = start("entry.train", [*channels(data), *slow(400)], tmp_path)
    try:
        wait_for(first, "epoch=3;")
        first.send_signal(sig)
        first.communicate(timeout=120)
        assert first.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    finally:
        assert_gone(first)
    assert (tmp_path / "o" / "csv" / "metrics.csv").is_file()
    if sig == signal.SIGTERM:
        # The user puts a file of their own where the stopped run's log was: the next run keeps it.
        (tmp_path / "o" / "csv" / "metrics.csv").write_text("my,own\n1,2\n")
        before = snapshot(tmp_path)
        result = run("entry.train", [*channels(data), *slow(3)], tmp_path)
        refused(result.returncode, result.stderr, "--output_dir o", "o/csv/metrics.csv", "not written by")
        assert snapshot(tmp_path) == before
        (tmp_path / "o" / "csv" / "metrics.csv").rename(tmp_path / "mine.csv")
    # A SIGKILL'd run records nothing at its end: what it left at its own names is still its own.
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(("m", "o/"))}
    result = run("entry.train", [*channels(data), *slow(3)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_kept(before, tmp_path)
    assert (tmp_path / "o" / "notes.txt").read_text() == "the user's notes\n"


@pytest.mark.slow
def test_a_training_and_a_prepare_on_one_data_folder_never_mix(tmp_path, titanic_csv):
    data = tmp_path / "pdata"
    first = run("entry.prepare", ["--csv", str(titanic_csv), "--out", "pdata"], tmp_path)
    assert first.returncode == 0, first.stderr
    argv = ["--train", "pdata/train_data.npz", "--val", "pdata/val_data.npz", *slow(400)]
    # A training reads the folder: a prepare into it is refused at once, and the data stays whole.
    training = start("entry.train", argv, tmp_path)
    try:
        wait_for(training, "epoch=2;")
        before = snapshot(data)
        prepare = run("entry.prepare", ["--csv", str(titanic_csv), "--out", "pdata", "--features", "basic"], tmp_path)
        refused(prepare.returncode, prepare.stderr, "--out pdata", f"pid {training.pid}")
        assert snapshot(data) == before
        training.send_signal(signal.SIGTERM)
        training.communicate(timeout=120)
    finally:
        assert_gone(training)
    # A prepare writes the folder (here: this test holds it as one would): a training is refused at once.
    with outputs.writing(data, prepared_files(), "--out", PREPARE):
        result = run("entry.train", argv, tmp_path)
    refused(result.returncode, result.stderr, "--train pdata:", f"pid {os.getpid()}")
    assert "epoch=" not in result.stdout and not (tmp_path / "m" / "model.pt").exists()


@pytest.mark.slow
def test_runs_started_together_on_a_fresh_clone_prepare_the_data_once(tmp_path, titanic_csv):
    procs = [start("entry.train", ["--epochs", "2", "--model_dir", f"m{i}", "--output_dir", f"o{i}"], tmp_path,
                   TITANIC_CSV=str(titanic_csv)) for i in (1, 2)]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        assert_gone(*procs)
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert sum("prepared data/" in err for _, err in results) == 1, [err[-2000:] for _, err in results]
    metrics = [json.loads((tmp_path / f"m{i}" / "metrics.json").read_text()) for i in (1, 2)]
    assert metrics[0]["val_loss"] == metrics[1]["val_loss"]


@pytest.mark.slow
def test_torchrun_on_a_fresh_clone_prepares_the_data_once(tmp_path, titanic_csv):
    from launch.jobs.container import free_port

    argv = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "entry.train",
            "--epochs", "2"]
    proc = subprocess.Popen([sys.executable, *argv], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=clean_env(TITANIC_CSV=str(titanic_csv), OMP_NUM_THREADS="1"))
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        assert_gone(proc)
    assert proc.returncode == 0, out[-3000:]
    assert out.count("prepared data/") == 1 and "world_size=2" in out, out[-3000:]
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["world_size"] == 2


# --- the launcher's records and names ---------------------------------------------------------------


def test_job_and_tuning_names_started_in_one_second_differ(tmp_path):
    from launch.jobs.folder import new_folder, new_job_dir
    from launch.tuning.result import tuning_name

    names = [new_job_dir(tmp_path / "jobs", "titanic-lightning")[0] for _ in range(5)]
    assert len(set(names)) == 5 and all(len(n) <= 63 for n in names)
    assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") for n in names)
    tunings = {tuning_name() for _ in range(20)}
    assert len(tunings) == 20 and all(len(n) <= 32 for n in tunings)
    assert len({new_folder(tmp_path / "tuning", tuning_name)[0] for _ in range(5)}) == 5


def test_a_run_record_never_replaces_a_file_it_did_not_write(tmp_path):
    from launch.records import report

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "job-1.json").write_text('{"mine": true}\n')
    with pytest.raises(UsageError, match="runs/job-1.json exists and was not written by titanic-lightning"):
        report.save({"job_name": "job-1", "status": "Completed"}, runs)
    assert (runs / "job-1.json").read_text() == '{"mine": true}\n'
    report.save({"job_name": "job-2", "status": "InProgress"}, runs)
    report.save({"job_name": "job-2", "status": "Completed"}, runs)  # its own record: updated
    assert json.loads((runs / "job-2.json").read_text())["status"] == "Completed"


def test_a_folder_stays_locked_until_the_last_of_its_holders_in_a_process_ends(tmp_path):
    """Two holders in one process that end in either order: another process is refused until both have."""
    from contextlib import ExitStack

    from titanic_lightning.io.locks import Busy, holding

    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY)\n"
             "try: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)\nexcept BlockingIOError: sys.exit(9)")

    def locked_elsewhere() -> bool:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 9

    for first_to_end in ("outer", "inner"):
        outer, inner = ExitStack(), ExitStack()
        outer.enter_context(holding(tmp_path, "--out", exclusive=True))
        inner.enter_context(holding(tmp_path, "--out", exclusive=False))
        (outer if first_to_end == "outer" else inner).close()
        assert locked_elsewhere(), f"the {first_to_end} holder's end released a lock the other still holds"
        (inner if first_to_end == "outer" else outer).close()
        assert not locked_elsewhere()
    with holding(tmp_path, "--out", exclusive=True):  # taken again after both ended
        probe_busy = subprocess.run([sys.executable, "-c", "import sys; from titanic_lightning.io.locks import holding\n"
                                     "with holding(sys.argv[1], '--out', exclusive=True): pass", str(tmp_path)],
                                    capture_output=True, text=True)
    assert "is in use by pid" in probe_busy.stderr and Busy.__name__ in probe_busy.stderr

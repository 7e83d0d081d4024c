"""SIGTERM and Ctrl-C at the moments the training tests do not reach: while a command starts, during
training with nowhere to keep a checkpoint, and while the launcher prepares a local job; and that
a two-host local job, stopped or failed, leaves no process behind (torchrun's workers included)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from launch.jobs.processes import STOP_GRACE_S
from tests.helpers import REPO, clean_env, submit_command, submit_env, write_channel


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


@pytest.mark.slow
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


@pytest.mark.slow
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
    # Rank 1 closes its pipes as its interpreter shuts down, a moment before it is gone.
    deadline = time.monotonic() + 10
    while _alive(rank1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(rank1)


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False


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


# --- a two-host local job leaves no process behind ----------------------------------------------


def _job_processes(jobs_dir: Path) -> dict[int, tuple[int, str]]:
    """The living processes whose environment names `jobs_dir` (every process a host starts has its
    folders in its SM_* variables): {pid: (parent pid, command line)}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if str(jobs_dir).encode() not in (entry / "environ").read_bytes():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        if state not in "ZX":
            found[int(entry.name)] = (int(ppid), cmdline.strip())
    return found


class _Job:
    """`launch/submit.py --local --instance-count 2` running in the background, its stderr read as it comes."""

    def __init__(self, tmp_path: Path):
        data = tmp_path / "data"
        for i, (split, rows) in enumerate((("train", 64), ("val", 32), ("test", 32))):
            write_channel(data / f"{split}_data.npz", split, rows=rows, seed=i)
        self.jobs_dir = tmp_path / "jobs"
        command = submit_command(["--local", "--json", "--instance-count", "2", "--data", str(data),
                                  "--jobs-dir", str(self.jobs_dir), "--hp", "epochs=100000",
                                  "--hp", "early_stopping=false", "--hp", "batch_size=16"])
        self.proc = subprocess.Popen(command, cwd=tmp_path, env=submit_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for(self, prefix: str, timeout: float = 120) -> None:
        with self._seen:
            if not self._seen.wait_for(lambda: any(line.startswith(prefix) for line in self.lines)
                                       or self.proc.poll() is not None, timeout):
                pytest.fail(f"{prefix!r} never came")
        assert self.proc.poll() is None, f"the job ended before printing {prefix!r}: {''.join(self.lines)[-3000:]}"

    def end(self) -> tuple[dict | None, float, dict[int, tuple[int, str]]]:
        """Wait for the launcher to end, watching the job's processes meanwhile: (its summary, if it
        printed one, the seconds it took, the processes of the job seen with PID 1 as their parent)."""
        started, adopted_by_init = time.monotonic(), {}
        while self.proc.poll() is None and time.monotonic() - started < 120:
            adopted_by_init.update({pid: p for pid, p in _job_processes(self.jobs_dir).items() if p[0] == 1})
            time.sleep(0.05)
        seconds = time.monotonic() - started
        self.proc.wait(timeout=10)
        out = self.proc.stdout.read()  # a few lines: the pipe never fills
        lines = out.strip().splitlines()
        return (json.loads(lines[-1]) if lines else None), seconds, adopted_by_init


@pytest.fixture
def stray_check(tmp_path):
    """Whatever a test leaves running of its job is killed afterwards, so one failure does not slow the rest."""
    yield
    for pid in _job_processes(tmp_path / "jobs"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["[algo-2] process:", "[algo-1] epoch=3;"], ids=["as the ranks start", "in training"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_two_host_job_leaves_no_process(sig, moment, tmp_path, stray_check):
    """torch elastic starts each worker in a session of its own: stopping torchrun's process group
    does not reach them, and a worker that does not stop in time must not outlive its torchrun.
    Stopping as the ranks start is when Lightning's collective stop most often hangs."""
    job = _Job(tmp_path)
    job.wait_for(moment)
    assert len([p for p in _job_processes(job.jobs_dir).values() if "entry/train.py" in p[1]]) == 4  # 2 torchruns, 2 workers
    job.proc.send_signal(sig)
    summary, seconds, adopted_by_init = job.end()
    left = _job_processes(job.jobs_dir)
    assert left == {} and adopted_by_init == {}, (left, adopted_by_init)
    assert job.proc.returncode == 128 + sig and summary is not None, "".join(job.lines)[-3000:]
    assert summary["status"] == "Stopped" and summary["stopped_by_signal"] == signal.Signals(sig).name
    assert all(h["stopped_by_launcher"] for h in summary["hosts"])
    assert seconds < STOP_GRACE_S + 15, f"took {seconds:.1f} s"


@pytest.mark.slow
def test_workers_whose_torchrun_died_end_with_the_job(tmp_path, stray_check):
    """Both hosts' torchrun killed mid-training: the job fails, and the workers they leave (re-parented,
    still training together) are ended at once, as their instances' containers would be."""
    job = _Job(tmp_path)
    job.wait_for("[algo-1] epoch=3;")
    agents = [pid for pid, (_, cmdline) in _job_processes(job.jobs_dir).items() if "torch.distributed.run" in cmdline]
    assert len(agents) == 2
    for pid in agents:
        os.kill(pid, signal.SIGKILL)
    summary, seconds, adopted_by_init = job.end()
    left = _job_processes(job.jobs_dir)
    assert left == {} and adopted_by_init == {}, (left, adopted_by_init)
    assert job.proc.returncode == 1 and summary is not None and summary["status"] == "Failed", "".join(job.lines)[-3000:]
    assert re.fullmatch(r"algo-\d: training script exited with code -9; see .*", summary["failure_reason"])
    assert seconds < STOP_GRACE_S, f"took {seconds:.1f} s"


@pytest.mark.slow
def test_a_launcher_that_fails_while_the_hosts_run_leaves_no_process(tmp_path, stray_check):
    """The job's checkpoint store replaced by a file: the launcher's next copy into it fails, and the
    launcher ends in one line, its hosts with it."""
    job = _Job(tmp_path)
    job.wait_for("[algo-1] epoch=3;")
    (store,) = job.jobs_dir.glob("*/checkpoints")
    shutil.rmtree(store)
    store.write_text("not a folder\n")
    summary, seconds, adopted_by_init = job.end()
    left = _job_processes(job.jobs_dir)
    assert left == {} and adopted_by_init == {}, (left, adopted_by_init)
    own = [line for line in job.lines if not line.startswith("[algo-")]  # the launcher's lines, not the hosts'
    assert job.proc.returncode == 1 and summary is None
    assert own[-1].startswith("error: ") and "Traceback" not in "".join(own), "".join(job.lines)[-3000:]
    assert seconds < STOP_GRACE_S + 15, f"took {seconds:.1f} s"

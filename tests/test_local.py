"""launch/submit.py --local: SageMaker's job layout and SM_* environment on this machine, one
subprocess per host, failures surfaced, artifacts packed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from launch.jobs import container, descendants, processes
from launch.jobs.checks import build_spec
from tests.helpers import submit_subprocess


@pytest.fixture
def data_dir(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    return out


def _summary(result) -> dict:
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    return json.loads(lines[-1])


def _documented_variables() -> set[str]:
    doc = container.__doc__
    return set(re.findall(r"\b(SM_[A-Z_]+|TRAINING_JOB_NAME)\b", doc)) - {"SM_CHANNEL_", "SM_HP_"}


def test_layout_and_environment_of_each_host(tiny_channels, tmp_path):
    data_dir = tiny_channels["train"].parent
    (data_dir / "preprocessing.json").write_text("{}")
    spec = build_spec(instance_count=2, hp=["epochs=5", "learning_rate=0.01"])
    job_dir, code_dir = tmp_path / "job", tmp_path / "job" / "code"
    code_dir.mkdir(parents=True)
    envs = {}
    for host in ("algo-1", "algo-2"):
        host_dir = job_dir / host
        channels = container.lay_out_host(host_dir, spec, host, data_dir, code_dir)
        envs[host] = container.sagemaker_env(spec, "job-1", host, host_dir, channels, port=4321)

        config = host_dir / "input" / "config"
        resource = json.loads((config / "resourceconfig.json").read_text())
        assert resource["current_host"] == host and resource["hosts"] == ["algo-1", "algo-2"]
        assert json.loads((config / "hyperparameters.json").read_text()) == {"epochs": "5", "learning_rate": "0.01"}
        assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"train", "val", "test", "code"}
        assert sorted(p.name for p in (host_dir / "input" / "data" / "train").iterdir()) == [
            "preprocessing.json", "train_data.npz"]
        assert (host_dir / "input" / "data" / "val" / "val_data.npz").is_file()
        assert (host_dir / "input" / "data" / "code").resolve() == code_dir.resolve()
        for sub in ("model", "output/data", "checkpoints"):
            assert (host_dir / sub).is_dir()
        assert (host_dir / "input" / "sm_training.env").is_file()

    env1, env2 = envs["algo-1"], envs["algo-2"]
    # Every variable the docstring lists is set, and nothing SM_* is set that it does not list.
    set_names = {k for k in env2 if not k.startswith(("SM_CHANNEL_", "SM_HP_"))}
    assert set_names == _documented_variables()
    assert env2["SM_CURRENT_HOST"] == "algo-2" and env2["SM_CURRENT_HOST_RANK"] == "1"
    assert env1["SM_CURRENT_HOST_RANK"] == "0"
    assert json.loads(env2["SM_HOSTS"]) == ["algo-1", "algo-2"] and env2["SM_HOST_COUNT"] == "2"
    assert env2["SM_MASTER_ADDR"] == "127.0.0.1" and env2["SM_MASTER_PORT"] == "4321"
    assert env2["SM_NETWORK_INTERFACE_NAME"] == "lo"
    assert env2["SM_CHANNEL_TRAIN"] == str(job_dir / "algo-2" / "input" / "data" / "train")
    assert env2["SM_MODEL_DIR"] == str(job_dir / "algo-2" / "model")
    assert env2["SM_OUTPUT_DATA_DIR"] == str(job_dir / "algo-2" / "output" / "data")
    assert env2["SM_OUTPUT_FAILURE"] == str(job_dir / "algo-2" / "output" / "failure")
    assert env2["SM_HP_EPOCHS"] == "5" and json.loads(env2["SM_HPS"]) == {"epochs": 5, "learning_rate": 0.01}
    assert json.loads(env2["SM_CHANNELS"]) == ["train", "val", "test", "code"]
    assert env2["SM_ENTRY_SCRIPT"] == "entry/train.py" and env2["TRAINING_JOB_NAME"] == "job-1"
    assert json.loads(env2["SM_TRAINING_ENV"])["master_addr"] == "127.0.0.1"
    assert not any("/opt/ml" in v for v in env2.values())

    assert container.host_command(spec, env2) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
        "--master_addr=127.0.0.1", "--master_port=4321", "--node_rank=1", "entry/train.py",
        "--epochs", "5", "--learning_rate", "0.01"]
    single = build_spec(hp=["epochs=5"])
    assert container.host_command(single, {**env1, "SM_HPS": '{"epochs": 5}'}) == [
        sys.executable, "entry/train.py", "--epochs", "5"]
    process = container.process_env(env2, code_dir, distributed=True)
    assert process["PYTHONPATH"] == str(code_dir) and process["NCCL_SOCKET_IFNAME"] == "lo"


def _host(tmp_path, name: str, script: str) -> processes.Host:
    host_dir = tmp_path / name
    (host_dir / "output").mkdir(parents=True)
    return processes.Host(name=name, dir=host_dir, command=[sys.executable, "-c", script], env=None,
                      log=tmp_path / f"{name}.log")


def test_a_dead_host_stops_the_others(tmp_path):
    hosts = [_host(tmp_path, "algo-1", "import time; time.sleep(120)"),
             _host(tmp_path, "algo-2", "import time, os; time.sleep(0.5); os._exit(3)")]
    started = time.monotonic()
    for h in hosts:
        processes.start(h, cwd=tmp_path)
    failed, timed_out = processes.supervise(hosts, timeout_s=60)
    assert time.monotonic() - started < 20
    assert failed is hosts[1] and not timed_out
    assert hosts[1].process.wait() == 3
    assert hosts[0].stopped and hosts[0].process.wait() < 0  # ended by a signal


def test_the_job_is_stopped_at_its_time_limit(tmp_path):
    hosts = [_host(tmp_path, f"algo-{i}", "import time; time.sleep(120)") for i in (1, 2)]
    for h in hosts:
        processes.start(h, cwd=tmp_path)
    failed, timed_out = processes.supervise(hosts, timeout_s=1)
    assert failed is None and timed_out
    assert all(h.stopped and h.process.wait() < 0 for h in hosts)


# A host that starts two processes in sessions of their own, as torch elastic starts its workers:
# one ends on SIGTERM, one ignores it. The host itself ignores SIGTERM when asked to (`hold`), as
# torchrun does while it waits for its workers.
_SPAWNING_HOST = """
import signal, subprocess, sys, time
if sys.argv[1] == "hold":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
for ignore in ("", "signal.signal(signal.SIGTERM, signal.SIG_IGN); "):
    subprocess.Popen([sys.executable, "-c", "import signal, time; " + ignore + "time.sleep(600)"], start_new_session=True)
time.sleep(600)
"""


def _spawned(host: processes.Host) -> list[descendants.Process]:
    """The two processes `host` started, once both are running."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [p for p in descendants.marked([host.mark])[host.mark] if p.pid != host.process.pid and p.pgid == p.pid]
        if len(found) == 2:
            return found
        time.sleep(0.05)
    pytest.fail("the host's processes did not start")


def _gone(spawned: list[descendants.Process]) -> bool:
    """Whether each of `spawned` has ended and been reaped."""
    return all(descendants.still(p) is None for p in spawned)


def test_what_a_host_leaves_in_other_sessions_is_adopted_and_killed_when_it_ends(tmp_path):
    host = _host(tmp_path, "algo-1", _SPAWNING_HOST)
    host.command.append("plain")
    with processes.held([host]):
        processes.start(host, cwd=tmp_path)
        spawned = _spawned(host)
        host.process.kill()
        host.process.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(descendants.still(p).ppid == os.getpid() for p in spawned):
            time.sleep(0.05)
        # Re-parented to this process, not to PID 1, where nothing of the job would look for them.
        assert [descendants.still(p).ppid for p in spawned] == [os.getpid()] * 2
        started = time.monotonic()
        processes.stop_hosts([host])
        assert time.monotonic() - started < 3  # the host has ended: what it left goes at once
    assert _gone(spawned) and not host.stopped


def test_processes_in_other_sessions_are_killed_after_the_grace_period(tmp_path):
    host = _host(tmp_path, "algo-1", _SPAWNING_HOST)
    host.command.append("hold")
    with processes.held([host]):
        processes.start(host, cwd=tmp_path)
        spawned = _spawned(host)
        started = time.monotonic()
        processes.stop_hosts([host], grace_s=1)
        assert 1 <= time.monotonic() - started < 4
    assert host.stopped and host.process.wait() == -signal.SIGKILL
    assert _gone(spawned)


@pytest.mark.slow
def test_failing_hosts_fail_the_job_with_a_one_line_reason(data_dir, tmp_path):
    # A value the submission accepts (the entry's parser takes any path) but every host refuses.
    result = submit_subprocess(["--local", "--json", "--instance-count", "2", "--hp", "train=missing.npz", "--data", str(data_dir)],
                               cwd=tmp_path, timeout=120)
    summary = _summary(result)
    assert result.returncode != 0
    assert summary["status"] == "Failed" and summary["model_artifact"] is None
    reason = summary["failure_reason"]
    assert "\n" not in reason and reason.startswith("error: --train missing.npz") and len(reason) <= 1024
    assert len(summary["hosts"]) == 2 and all(h["exit_code"] != 0 for h in summary["hosts"])
    # The host that failed first carries the entry's own line; a host stopped because of it is marked so.
    assert any(h["failure_reason"] == reason and not h["stopped_by_launcher"] for h in summary["hosts"])
    job_dir = tmp_path / "jobs" / summary["job_name"]
    assert summary["job_dir"] == str(job_dir) and (job_dir / "output.tar.gz").is_file()
    assert not (job_dir / "model.tar.gz").exists()
    # Recorded in runs/ like a real job, in the same record shape.
    record = json.loads((tmp_path / "runs" / f"{summary['job_name']}.json").read_text())
    assert (record["mode"], record["status"], record["failure_reason"]) == ("local", "Failed", reason)
    assert record["instance_count"] == 2 and record["model_artifact"] is None and record["val_acc"] is None
    assert f"recorded in {tmp_path / 'runs' / summary['job_name']}.json" in result.stderr


@pytest.mark.slow
def test_two_hosts_train_one_model_with_world_size_2(data_dir, tmp_path):
    started = time.monotonic()
    # Credentials in the environment must not leak into logs, job files or artifacts.
    secret = "wJalrXUtnFEMI-sentinel-K7MDENG"
    result = submit_subprocess(["--local", "--json", "--instance-count", "2", "--data", str(data_dir)], cwd=tmp_path,
                               timeout=180, env={"AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": secret,
                                                 "AWS_ACCESS_KEY_ID": "AKIASENTINEL"})
    elapsed = time.monotonic() - started
    summary = _summary(result)
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 120, f"took {elapsed:.0f} s"
    assert summary["status"] == "Completed" and summary["distributed"] is True
    assert [h["exit_code"] for h in summary["hosts"]] == [0, 0]
    assert {"status", "job_name", "job_dir", "model_artifact", "wall_seconds", "hosts"} <= set(summary)
    assert "torch.distributed.run" in summary["command"] and "--nnodes=2" in summary["command"]
    with tarfile.open(summary["model_artifact"]) as tar:
        assert {"metrics.json", "model.pt"} <= set(tar.getnames())
        metrics = json.load(tar.extractfile("metrics.json"))
    assert metrics["world_size"] == 2 and metrics["num_nodes"] == 2
    assert summary["warnings"] == []  # no file written by both hosts: the model is saved on rank 0 only
    assert 0.7 < metrics["val_acc"] <= 1.0
    with tarfile.open(summary["output_artifact"]) as tar:
        assert any(name.startswith("tensorboard/") for name in tar.getnames())
    assert secret not in result.stdout + result.stderr
    for path in Path(summary["job_dir"]).rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path
            if path.name.endswith(".tar.gz"):
                with tarfile.open(path) as tar:
                    for member in tar.getmembers():
                        if member.isfile():
                            assert secret.encode() not in tar.extractfile(member).read(), f"{path}:{member.name}"


@pytest.mark.slow
def test_the_same_command_trains_afresh_and_resume_is_explicit(data_dir, tmp_path):
    """Each job has its own checkpoint store: running a command again trains afresh; `--resume JOB`
    continues JOB from its store, and refuses a job with no checkpoint or trained on other data."""
    command = ["--local", "--json", "--data", str(data_dir), "--hp", "epochs=3"]
    first, again = (_summary(submit_subprocess(command, cwd=tmp_path, timeout=180)) for _ in range(2))
    for summary in (first, again):
        assert summary["status"] == "Completed" and summary["resumed_from"] is None
        assert summary["checkpoints"] == str(tmp_path / "jobs" / summary["job_name"] / "checkpoints")
        assert (Path(summary["checkpoints"]) / "last.ckpt").is_file()
        metrics = summary["metrics"]
        assert metrics["epochs_run"] == 3 and metrics["fit_seconds"] <= metrics["wall_seconds"]
        assert metrics["fit_seconds_total"] == metrics["fit_seconds"]
    assert first["job_name"] != again["job_name"]
    assert "resuming from" not in Path(again["hosts"][0]["log"]).read_text()

    resumed = submit_subprocess([*command[:-1], "epochs=5", "--resume", first["job_name"]], cwd=tmp_path, timeout=180)
    summary = _summary(resumed)
    assert resumed.returncode == 0 and summary["status"] == "Completed", resumed.stderr[-3000:]
    assert summary["resumed_from"] == first["job_name"] and summary["job_name"] not in (first["job_name"], again["job_name"])
    assert "3 epoch(s) already done" in Path(summary["hosts"][0]["log"]).read_text()
    metrics = summary["metrics"]
    assert metrics["epochs_run"] == 5 and metrics["fit_seconds"] <= metrics["wall_seconds"]
    assert metrics["fit_seconds_total"] > metrics["fit_seconds"]

    # Other data: the entry refuses the checkpoint before training; the job fails with its line.
    other = tmp_path / "other-data"
    shutil.copytree(data_dir, other)
    with np.load(other / "train_data.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["X_train"] = arrays["X_train"] + 0.5  # other values, the same rows: preprocessing.json still fits
    np.savez(other / "train_data.npz", **arrays)
    refused = submit_subprocess(["--local", "--json", "--data", str(other), "--hp", "epochs=5", "--resume", first["job_name"]],
                                cwd=tmp_path, timeout=180)
    summary = _summary(refused)
    assert refused.returncode == 1 and summary["status"] == "Failed"
    assert re.fullmatch(r"error: \S+/algo-1/checkpoints/last.ckpt: the training data differs from the data this "
                        r"checkpoint was trained on .*", summary["failure_reason"])

    # A job that does not exist, or left no checkpoint: one line, exit 2, no new job.
    (tmp_path / "jobs" / "titanic-lightning-m5-large-x1-20200101000000").mkdir()
    jobs_before = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    for name, expected in (("titanic-lightning-m5-large-x1-19990101000000", "no such job in"),
                           ("titanic-lightning-m5-large-x1-20200101000000", "no last.ckpt in"),
                           ("../jobs", "not a training job name")):
        result = submit_subprocess([*command, "--resume", name], cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and result.stdout == ""
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: --resume {name}: ") and expected in line
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == jobs_before


def _finished_local_run(tmp_path, status="Completed", reason=None):
    """A Run as `api.run_local` returns it for a finished one-host job (nothing trained)."""
    from launch.api import Run
    from launch.jobs import prices
    from launch.records import report

    job = "titanic-lightning-m5-large-x1-20260101000000-ab12"
    summary = {"status": status, "job_name": job, "job_dir": str(tmp_path / "jobs" / job),
               "model_artifact": str(tmp_path / "jobs" / job / "model.tar.gz") if status == "Completed" else None,
               "output_artifact": str(tmp_path / "jobs" / job / "output.tar.gz"), "wall_seconds": 21.345,
               "failure_reason": reason, "stopped_by_signal": None, "checkpoints": str(tmp_path / "jobs" / job / "checkpoints"),
               "resumed_from": None, "instance_type": "ml.m5.large", "instance_count": 1, "spot": False,
               "distributed": False, "network_isolation": False, "wheelhouse": False, "container_venv": False,
               "hyperparameters": {"epochs": "3"}, "command": ["python", "entry/train.py", "--epochs", "3"],
               "hosts": [{"host": "algo-1", "exit_code": 0, "stopped_by_launcher": False, "install_seconds": None,
                          "failure_reason": None, "log": str(tmp_path / "jobs" / job / "logs" / "algo-1.log")}],
               "metrics": {"val_loss": 0.4213456789, "val_acc": 0.8181818181818182, "test_acc": 0.8268156424581006,
                           "best_epoch": 3, "epochs_run": 3, "wall_seconds": 20.1},
               "warnings": []}
    record = report.local_record(summary, prices.load())
    return Run.of(record, tmp_path / "runs" / f"{job}.json", summary)


@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_a_local_job_ends_with_the_summary_lines_a_real_job_prints(status, tmp_path, monkeypatch, capsys):
    from launch import api
    from launch.records import report
    from tests.helpers import submit_inprocess

    run = _finished_local_run(tmp_path, status, None if status == "Completed" else "error: --train missing.npz: no such file")
    monkeypatch.setattr(api, "run_local", lambda *args, **kwargs: run)
    code, out, err = submit_inprocess(["--local", "--jobs-dir", str(tmp_path / "jobs"), "--runs-dir", str(tmp_path / "runs")],
                                      capsys)
    assert code == (0 if status == "Completed" else 1), err
    assert out.startswith(report.human(run.record) + "\n")  # the lines `remote` prints after a SageMaker job
    assert out.splitlines()[0] == f"job {run.job_name}: {status}" + (
        "" if status == "Completed" else " (error: --train missing.npz: no such file)")
    assert "val_acc=0.8182" in out and "nothing billed; ~$" in out
    assert f"  job directory:    {run.summary['job_dir']}\n" in out and f"recorded in {run.record_path}\n" in out
    assert "{" not in out and all(len(line) < 200 for line in out.splitlines())

    code, out, err = submit_inprocess(["--local", "--json", "--jobs-dir", str(tmp_path / "jobs"),
                                       "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == (0 if status == "Completed" else 1), err
    assert json.loads(out) == run.summary  # exactly one JSON object: summary.json
    assert f"recorded in {run.record_path}" in err

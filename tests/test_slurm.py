"""Under a real SLURM scheduler, `srun --ntasks-per-node=2 python -m entry.train` is one DDP run.

Needs a running cluster (`scripts/slurm_one_node.sh start` brings up a one-node one here; `.ci/run`
does so), except the launcher's dry run and its refusals, which are in the fast tier. Without
`srun` or an idle node the tests skip and say why; under CI (`CI=true`) a missing cluster fails
instead, so the proof cannot quietly disappear.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import check_probe, clean_env, id_channels, train_args


def _cluster_problem() -> str | None:
    if shutil.which("srun") is None or shutil.which("sinfo") is None:
        return "no SLURM here (srun/sinfo not on PATH): scripts/slurm_one_node.sh start brings up a one-node cluster"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30).stdout.split()
    if not {"idle", "mixed"} & set(states):
        return f"SLURM has no idle node (sinfo says {states or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _cluster_problem()
    if problem and os.environ.get("CI") == "true" and os.environ.get("TITANIC_SLURM") != "skip":
        pytest.fail(problem)
    if problem:
        pytest.skip(problem)


def srun(tasks_per_node: int, argv: list[str], env: dict[str, str], cwd, timeout: float = 300):
    return subprocess.run(["srun", "-N1", f"--ntasks-per-node={tasks_per_node}", "--kill-on-bad-exit=1",
                           "--time=10", *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_srun_two_tasks_train_one_ddp_run(cluster, tmp_path):
    channels, probe = id_channels(tmp_path / "data"), tmp_path / "probe"
    probe.mkdir()
    env = clean_env(PROBE_DIR=str(probe), OMP_NUM_THREADS="1")
    done = srun(2, [sys.executable, "-m", "entry.train",
                    *train_args(channels, "--model_dir", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"))],
                env, tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    for rank in (0, 1):
        assert (f"process: world_size=2; global_rank={rank}; local_rank={rank}; node_rank=0; launcher=slurm; "
                "accelerator=cpu; devices=2; num_nodes=1; strategy=tests.ddp_probe:factory (ProbeDDP); backend=gloo;") in out
    assert out.count("final: ") == 1  # one run, reported once by global rank 0
    check_probe(probe, tmp_path / "model", channels)  # identical weights on both ranks, disjoint shards


@pytest.mark.slow
def test_srun_on_a_fresh_folder_prepares_the_data_once(cluster, tmp_path, titanic_csv):
    """`srun ... python -m entry.train` with no arguments: both tasks start at once, one prepares data/."""
    done = srun(2, [sys.executable, "-m", "entry.train", "--epochs", "2"],
                clean_env(OMP_NUM_THREADS="1", TITANIC_CSV=str(titanic_csv)), tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert out.count("prepared data") == 1 and out.count("final: ") == 1 and "world_size=2" in out
    assert json.loads((tmp_path / "model" / "metrics.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_srun_tasks_without_a_count_per_node_are_refused_in_one_line(cluster, tmp_path):
    channels = id_channels(tmp_path / "data")
    env = clean_env(OMP_NUM_THREADS="1")
    done = subprocess.run(["srun", "-N1", "-n2", "--time=5", sys.executable, "-m", "entry.train",
                           "--train", str(channels["train"]), "--val", str(channels["val"]), "--epochs", "1"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and all("srun started 2 tasks without --ntasks-per-node" in line for line in errors), done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "model").exists()


# --- the launcher's side: launch/slurm.sbatch and python launch/slurm.py --------------------------

REPO = Path(__file__).resolve().parents[1]


def launcher(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, str(REPO / "launch" / "slurm.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env(OMP_NUM_THREADS="1"))


def test_the_dry_run_prints_the_script_with_the_jobs_values(tmp_path, prepared):
    """Away from a cluster (no sinfo on PATH), as on a laptop: the script alone, for any cluster's values."""
    done = launcher("--nodes", "2", "--tasks-per-node", "4", "--gpus-per-node", "4", "--cpus-per-task", "3",
                    "--partition", "gpu", "--time", "01:30:00", "--hp", "epochs=7", "--hp", "hidden_sizes=[16, 8]",
                    "--data", str(prepared), "--dry-run", cwd=tmp_path, env={**clean_env(), "PATH": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    script = done.stdout
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=3", "#SBATCH --time=01:30:00", "#SBATCH --partition=gpu",
                 "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue", "#SBATCH --output=slurm-%x-%j.out"):
        assert sbatch.count(line) == 1, (line, sbatch)
    srun = [line for line in script.splitlines() if line.startswith("srun ")]
    assert len(srun) == 1 and f"{sys.executable} -m entry.train" in srun[0]
    flags = script[script.index("srun "):]
    assert "--epochs 7" in flags and "--hidden_sizes '[16, 8]'" in flags
    assert f"--train {prepared.resolve()}/train_data.npz" in flags and f"--test {prepared.resolve()}/test_data.npz" in flags
    assert not list(tmp_path.iterdir())  # nothing written, nothing submitted


@pytest.mark.parametrize(("args", "message"), [
    (["--time", "soon"], "--time 'soon': not a SLURM time limit"),
    (["--time", "0"], "--time '0': not a SLURM time limit"),
    (["--nodes", "0"], "--nodes 0: must be a whole number of at least 1"),
    (["--hp", "epoch=5"], "--hp epoch=5: 'epoch' is not a flag of entry/train.py"),
    (["--hp", "learning_rate=inf"], "--hp learning_rate=inf"),
    (["--resume", "abc"], "--resume 'abc': give the SLURM job id"),
    (["--partition", "a;b"], "--partition 'a;b': not a partition name"),
    (["--time", "1"], "--time 1: shorter than 3 minutes"),
    (["--time", "1:60"], "--time 1:60: shorter than 3 minutes"),
])
def test_bad_values_are_one_line_before_anything_is_submitted(tmp_path, args, message):
    done = launcher(*args, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {message}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_no_sbatch_on_path_is_one_line(tmp_path):
    done = launcher("--tasks-per-node", "2", cwd=tmp_path, env={**clean_env(), "PATH": str(tmp_path)})
    assert done.returncode == 2 and done.stderr.startswith("error: sbatch is not on PATH"), done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--partition", "nosuch"], "--partition nosuch: no such partition; sinfo lists debug"),
    (["--tasks-per-node", str(os.cpu_count() + 1)], f"--tasks-per-node {os.cpu_count() + 1} x --cpus-per-task 1: more CPUs"),
    (["--cpus-per-task", str(os.cpu_count() + 1)], f"--tasks-per-node 1 x --cpus-per-task {os.cpu_count() + 1}: more CPUs"),
    (["--gpus-per-node", "1"], "--gpus-per-node 1: a node of partition debug has 0 GPU(s)"),
    (["--nodes", "2"], "--nodes 2: partition debug has 1 node(s)"),
    (["--resume", "99999"], "--resume 99999: "),
])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["submit", "dry run"])
def test_what_the_cluster_cannot_hold_is_refused_in_one_line(cluster, tmp_path, args, message, dry_run):
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    done = launcher(*args, *dry_run, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {message}"), done.stderr
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout == before


@pytest.mark.slow
def test_ctrl_c_while_waiting_says_the_job_goes_on(cluster, tmp_path, prepared):
    import signal

    proc = subprocess.Popen([sys.executable, str(REPO / "launch" / "slurm.py"), "--wait", "--hp", "epochs=2000",
                             "--hp", "early_stopping=false", "--data", str(prepared)], cwd=tmp_path,
                            env=clean_env(OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()
    assert first.startswith("submitted SLURM job "), first
    job_id = first.split()[3].rstrip(":")
    try:
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
        assert proc.returncode == 130
        assert rest.splitlines()[-1] == (f"error: interrupted; SLURM job {job_id} goes on (scancel {job_id} stops it), "
                                        f"its log is slurm-titanic-{job_id}.out")
        assert job_id in subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    finally:
        subprocess.run(["scancel", job_id], timeout=60)


def _weights(model_dir: Path) -> dict:
    import torch

    return torch.load(model_dir / "model.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_launcher_waits_records_and_compares_a_two_task_run(cluster, tmp_path, titanic_csv):
    """The command as a user types it in a fresh folder: the job's entry prepares data/ itself."""
    done = launcher("--tasks-per-node", "2", "--wait", "--hp", "epochs=5", cwd=tmp_path,
                    env=clean_env(OMP_NUM_THREADS="1", TITANIC_CSV=str(titanic_csv)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("prepared data") == 1
    assert "launcher=slurm" in done.stderr and "process: world_size=2; global_rank=1;" in done.stderr  # the log, followed
    [record_file] = (tmp_path / "runs").glob("slurm-*.json")
    record = json.loads(record_file.read_text())
    job_id = record["job_id"]
    assert (record["mode"], record["status"], record["instance_count"], record["tasks_per_node"]) == ("slurm", "Completed", 1, 2)
    metrics = json.loads((tmp_path / "jobs" / f"slurm-{job_id}" / "model" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs_run"] == 5 and record["val_acc"] == metrics["val_acc"]
    assert record["wall_seconds"] > 0 and f"job slurm-{job_id}: Completed" in done.stdout
    compared = subprocess.run([sys.executable, str(REPO / "launch" / "submit.py"), "--compare", str(record_file),
                               "--plot", str(tmp_path / "compare.png")], cwd=tmp_path, capture_output=True, text=True,
                              env=clean_env(), timeout=300)
    assert compared.returncode == 0, compared.stderr
    row = [line for line in compared.stdout.splitlines() if line.startswith(f"slurm-{job_id}")]
    assert row and " slurm " in row[0] and "Completed" in row[0] and f"{record['val_acc']:.4f}" in row[0]
    assert (tmp_path / "compare.png").stat().st_size > 0


@pytest.mark.slow
def test_sbatch_wait_runs_the_batch_script_as_typed(cluster, tmp_path, prepared):
    env = clean_env(OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    done = subprocess.run(["sbatch", "--wait", str(REPO / "launch" / "slurm.sbatch"), "--epochs", "5",
                           "--train", str(prepared / "train_data.npz"), "--val", str(prepared / "val_data.npz")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    job_id = done.stdout.split()[-1]
    log = (tmp_path / f"slurm-titanic-{job_id}.out").read_text()
    assert done.returncode == 0, log[-3000:]
    assert log.count("launcher=slurm") == 2 and "world_size=2" in log and log.count("final: ") == 1
    metrics = json.loads((tmp_path / "jobs" / f"slurm-{job_id}" / "model" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["epochs_run"]) == (2, 5)
    assert (tmp_path / "jobs" / f"slurm-{job_id}" / "checkpoints" / "last.ckpt").is_file()
    # `make clean` takes all of it: the job's folders, its checkpoint and its log.
    from titanic_lightning.io.clean import clean

    clean(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


REQUEUE_ARGS = ["--tasks-per-node", "2", "--hp", "epochs=40", "--hp", "early_stopping=false"]


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory, prepared) -> dict:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    done = launcher(*REQUEUE_ARGS, "--data", str(prepared), "--wait", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    [job_dir] = (cwd / "jobs").iterdir()
    return _weights(job_dir / "model")


@pytest.mark.slow
@pytest.mark.parametrize("interruption", [["scontrol", "requeue"], ["scancel", "--signal=USR1"]],
                         ids=["scontrol requeue", "SIGUSR1 before the time limit"])
def test_a_requeued_job_ends_with_the_weights_of_an_uninterrupted_one(cluster, tmp_path, prepared, uninterrupted,
                                                                      interruption):
    import torch

    submitted = launcher(*REQUEUE_ARGS, "--data", str(prepared), cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    log = tmp_path / f"slurm-titanic-{job_id}.out"
    deadline = time.monotonic() + 300
    while "epoch=10;" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the job did not reach epoch 10"
        time.sleep(0.5)
    subprocess.run([*interruption, job_id], check=True, timeout=60)
    while "JobState=COMPLETED" not in subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                                                     text=True).stdout:
        assert time.monotonic() < deadline + 300, log.read_text()[-3000:]
        time.sleep(1)
    text = log.read_text()
    assert "(restart 1)" in text and "resuming from" in text, text[-3000:]
    if interruption[0] == "scancel":
        assert f"error: stopped by SLURM's SIGUSR1 (the time limit is near); job {job_id} requeued, to continue from its " \
               "last checkpoint" in text, text[-3000:]
    resumed = _weights(tmp_path / "jobs" / f"slurm-{job_id}" / "model")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


@pytest.mark.slow
def test_run_slurm_from_python_returns_a_run(cluster, tmp_path, prepared, monkeypatch):
    import launch

    with pytest.raises(launch.UsageError, match="--time 'never': not a SLURM time limit"):
        launch.run_slurm(time="never")
    with pytest.raises(launch.UsageError, match="--hp epochs=0"):
        launch.run_slurm(hyperparameters={"epochs": 0})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    lines = []
    run = launch.run_slurm(tasks_per_node=2, hyperparameters={"epochs": 3, "hidden_sizes": [8]}, data=prepared,
                           cwd=tmp_path, runs_dir=tmp_path / "runs", echo=lines.append)
    assert (run.mode, run.status, run.ok) == ("slurm", "Completed", True)
    assert run.record_path == tmp_path / "runs" / f"{run.job_name}.json"
    assert run.metrics["epochs_run"] == 3 and run.val_acc == run.metrics["val_acc"]
    assert any("launcher=slurm" in line for line in lines)
    compared = launch.compare([run.record_path])
    assert run.job_name in compared.table

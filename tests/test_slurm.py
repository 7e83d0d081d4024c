"""Under a real SLURM scheduler, `srun --ntasks-per-node=2 python -m entry.train` is one DDP run.

Needs a running cluster (`scripts/slurm_one_node.sh start` brings up a one-node one here; `.ci/run`
does so). Without `srun` or an idle node the tests skip and say why; under CI (`CI=true`) a missing
cluster fails instead, so the proof cannot quietly disappear.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import check_probe, clean_env, id_channels, train_args

pytestmark = pytest.mark.slow


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

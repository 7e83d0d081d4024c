"""Data parallelism is real: two simulated SageMaker hosts and torchrun, on CPU with gloo.

Each run uses `--strategy tests.ddp_probe:factory`, a DDP strategy that records per rank the rows
it trained on (the synthetic data carries row ids in feature column 0), its steps, and its final
parameters.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from launch.jobs.container import free_port
from tests.helpers import (
    PROBE_EPOCHS,
    check_probe,
    clean_env,
    finish_all,
    id_channels,
    sagemaker_host_env,
    start,
    train_args,
    write_channel,
)

pytestmark = pytest.mark.slow


def test_two_sagemaker_hosts_train_one_model(tmp_path):
    channels, probe, port = id_channels(tmp_path / "data"), tmp_path / "probe", free_port()
    probe.mkdir()
    procs = [start(["-m", "entry.train", *train_args(channels)], sagemaker_host_env(h, tmp_path, port, probe), tmp_path)
             for h in ("algo-1", "algo-2")]
    results = finish_all(procs)
    for code, out in results:
        assert code == 0, out[-3000:]
    assert "process: world_size=2; global_rank=1;" in results[1][1] and "node_rank=1;" in results[1][1]
    assert "launcher=sagemaker" in results[0][1] and "backend=gloo" in results[0][1]
    check_probe(probe, tmp_path / "algo-1" / "model", channels)
    # Only global rank 0 wrote a model: the other host's model directory stays empty.
    assert not (tmp_path / "algo-2" / "model").exists()


def test_torchrun_two_processes_train_one_model(tmp_path):
    channels, probe = id_channels(tmp_path / "data"), tmp_path / "probe"
    probe.mkdir()
    env = clean_env(PROBE_DIR=str(probe), OMP_NUM_THREADS="1")
    argv = ["-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "entry.train",
            *train_args(channels, "--model_dir", str(tmp_path / "model"), "--output_dir", str(tmp_path / "out"))]
    [(code, out)] = finish_all([start(argv, env, tmp_path)])
    assert code == 0, out[-3000:]
    assert "launcher=torchrun" in out and "world_size=2" in out
    check_probe(probe, tmp_path / "model", channels)


def test_a_killed_host_fails_the_other_within_the_timeout(tmp_path):
    channels, probe, port = id_channels(tmp_path / "data"), tmp_path / "probe", free_port()
    probe.mkdir()
    args = train_args(channels)
    args[args.index("--epochs") + 1] = "100000"
    procs = [start(["-m", "entry.train", *args], sagemaker_host_env(h, tmp_path, port, probe), tmp_path)
             for h in ("algo-1", "algo-2")]
    # Wait until training is under way (rank 0 prints a line per epoch), then kill the second host.
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = procs[0].stdout.readline()
        seen.append(line)
        if line.startswith("epoch=3;"):
            break
    else:
        pytest.fail("training never started: " + "".join(seen)[-2000:])
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        rest, _ = procs[0].communicate(timeout=60)
    finally:
        procs[0].kill()
    assert procs[0].returncode not in (0, None)
    assert time.monotonic() - killed_at < 45  # well within the 30 s process-group timeout plus start-up slack
    assert not (tmp_path / "algo-1" / "model" / "model.pt").exists()


def test_lightning_launched_cpu_processes_train_one_model(tmp_path):
    channels, probe = id_channels(tmp_path / "data"), tmp_path / "probe"
    probe.mkdir()
    env = clean_env(PROBE_DIR=str(probe), OMP_NUM_THREADS="1")
    argv = ["-m", "entry.train", *train_args(channels, "--cpu_processes", "2", "--model_dir", str(tmp_path / "model"),
                                             "--output_dir", str(tmp_path / "out"))]
    [(code, out)] = finish_all([start(argv, env, tmp_path)])
    assert code == 0, out[-3000:]
    assert "launcher=local" in out and "world_size=2; global_rank=1;" in out
    check_probe(probe, tmp_path / "model", channels)


def sagemaker_channels(channels: dict[str, Path]) -> dict[str, str]:
    return {"SM_CHANNEL_TRAIN": str(channels["train"]), "SM_CHANNEL_VAL": str(channels["val"])}


def written_models(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("algo-*/**/model.pt"))


def test_one_sagemaker_host_runs_two_processes(tmp_path):
    """SageMaker starts the entry once per host; Lightning starts the host's second process."""
    channels, probe, port = id_channels(tmp_path / "data"), tmp_path / "probe", free_port()
    probe.mkdir()
    env = sagemaker_host_env("algo-1", tmp_path, port, probe, hosts=["algo-1"], **sagemaker_channels(channels))
    argv = ["-m", "entry.train", *train_args(None, "--cpu_processes", "2")]
    [(code, out)] = finish_all([start(argv, env, tmp_path)])
    assert code == 0, out[-3000:]
    assert "launcher=sagemaker" in out and "world_size=2; global_rank=1; local_rank=1; node_rank=0;" in out
    check_probe(probe, tmp_path / "algo-1" / "model", channels)
    assert written_models(tmp_path) == [tmp_path / "algo-1" / "model" / "model.pt"]


def test_two_sagemaker_hosts_run_two_processes_each(tmp_path):
    channels, probe, port = id_channels(tmp_path / "data"), tmp_path / "probe", free_port()
    probe.mkdir()
    argv = ["-m", "entry.train", *train_args(None, "--cpu_processes", "2")]
    procs = [start(argv, sagemaker_host_env(h, tmp_path, port, probe, **sagemaker_channels(channels)), tmp_path)
             for h in ("algo-1", "algo-2")]
    results = finish_all(procs)
    for code, out in results:
        assert code == 0, out[-3000:]
    assert "world_size=4; global_rank=1; local_rank=1; node_rank=0;" in results[0][1]
    for rank, local in ((2, 0), (3, 1)):
        assert f"world_size=4; global_rank={rank}; local_rank={local}; node_rank=1;" in results[1][1]
    check_probe(probe, tmp_path / "algo-1" / "model", channels, world=4)
    # Global rank 0 alone wrote a model: one model.pt for the job.
    assert written_models(tmp_path) == [tmp_path / "algo-1" / "model" / "model.pt"]


def test_two_processes_train_as_one_process_on_the_same_global_batches(tmp_path):
    """Every optimizer step all-reduces its gradients: two processes with batches of 8 end with the
    weights one process reaches with batches of 16 (each global batch is the two ranks' batches
    together: the sampler deals the rows out alternately)."""
    data = tmp_path / "data"
    channels = {split: write_channel(data / split / f"{split}_data.npz", split, rows=rows, seed=i)
                for i, (split, rows) in enumerate((("train", 96), ("val", 32)))}
    params = {}
    for name, extra in (("two", ["--cpu_processes", "2", "--batch_size", "8"]), ("one", ["--batch_size", "16"])):
        probe = tmp_path / name / "probe"
        probe.mkdir(parents=True)
        argv = ["-m", "entry.train", *train_args(channels, "--hidden_sizes", "[16, 8]",
                                                 "--model_dir", str(tmp_path / name / "model"),
                                                 "--output_dir", str(tmp_path / name / "out"), *extra)]
        [(code, out)] = finish_all([start(argv, clean_env(PROBE_DIR=str(probe), OMP_NUM_THREADS="1"), tmp_path)])
        assert code == 0, out[-3000:]
        ranks = [json.loads(p.read_text()) for p in sorted(probe.glob("rank*.json"))]
        # 96 rows: 48 per rank in 6 batches of 8, or 6 batches of 16 alone.
        assert [r["steps"] for r in ranks] == [6 * PROBE_EPOCHS] * len(ranks)
        params[name] = [r["params"] for r in ranks]
    assert len(params["two"]) == 2 and params["two"][0] == params["two"][1]
    for key, values in params["one"][0].items():
        np.testing.assert_allclose(params["two"][0][key], values, rtol=1e-5, atol=1e-6, err_msg=key)

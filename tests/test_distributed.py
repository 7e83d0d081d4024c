"""Data parallelism is real: two simulated SageMaker hosts and torchrun, on CPU with gloo.

Each run uses `--strategy tests.ddp_probe:factory`, a DDP strategy that records per rank the rows
it trained on (the synthetic data carries row ids in feature column 0), its steps, and its final
parameters.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_accuracy, binary_auroc

from tests.helpers import clean_env
from titanic_lightning.network import MLP

pytestmark = pytest.mark.slow

TRAIN_ROWS, VAL_ROWS, EPOCHS = 101, 37, 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def id_channels(root: Path) -> dict[str, Path]:
    """Synthetic channels whose feature column 0 is the row id (and a real signal in column 1)."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, rows in (("train", TRAIN_ROWS), ("val", VAL_ROWS)):
        X = rng.normal(size=(rows, 4)).astype("float32")
        X[:, 0] = np.arange(rows)
        y = (X[:, 1] + 0.5 * rng.normal(size=rows) > 0).astype("int64")
        paths[split] = root / split
        paths[split].mkdir(parents=True)
        np.savez(paths[split] / f"{split}_data.npz", **{f"X_{split}": X, f"y_{split}": y})
    return paths


def train_args(channels: dict[str, Path] | None, *extra: str) -> list[str]:
    """The probe run's flags; with channels None the data comes from SM_CHANNEL_TRAIN/VAL."""
    data = ["--train", str(channels["train"]), "--val", str(channels["val"])] if channels else []
    return [*data, "--epochs", str(EPOCHS), "--early_stopping", "false", "--batch_size", "8", "--hidden_sizes", "[8]",
            "--strategy", "tests.ddp_probe:factory", "--process_group_timeout", "30", *extra]


def sagemaker_host_env(host: str, tmp: Path, port: int, probe: Path, hosts=("algo-1", "algo-2"),
                       **extra: str) -> dict[str, str]:
    return clean_env(
        SM_HOSTS=json.dumps(list(hosts)), SM_CURRENT_HOST=host, SM_MASTER_ADDR="127.0.0.1",
        SM_MASTER_PORT=str(port), SM_NUM_GPUS="0", SM_NUM_CPUS="1", SM_MODEL_DIR=str(tmp / host / "model"),
        SM_OUTPUT_DATA_DIR=str(tmp / host / "output"), PROBE_DIR=str(probe), OMP_NUM_THREADS="1", **extra,
    )


def start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str]]:
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append((proc.returncode, out))
    return results


def check_probe(probe: Path, model_dir: Path, channels: dict[str, Path], world: int = 2) -> None:
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(world)]
    assert sorted(p.name for p in probe.iterdir()) == sorted(f"rank{r}.json" for r in range(world))
    assert [r["world_size"] for r in ranks] == [world] * world
    # Same number of steps on every rank, and identical parameters at the end: gradients were averaged.
    assert {r["steps"] for r in ranks} == {EPOCHS * int(np.ceil(np.ceil(TRAIN_ROWS / world) / 8))}
    for other in ranks[1:]:
        for key, values in ranks[0]["params"].items():
            np.testing.assert_array_equal(values, other["params"][key], err_msg=key)
    for epoch in map(str, range(EPOCHS)):
        seen = [r["rows"][epoch] for r in ranks]
        assert len({len(rows) for rows in seen}) == 1
        assert set().union(*seen) == set(range(TRAIN_ROWS))  # together: the whole training split
        assert sum(map(len, seen)) - TRAIN_ROWS <= world - 1  # apart: disjoint but for world_size - 1 padding rows
    assert ranks[0]["rows"]["0"] != ranks[0]["rows"]["1"]  # reshuffled every epoch

    # The reported validation metrics are those of all ranks together: they equal a single-process
    # evaluation of the saved weights on the whole validation split.
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["world_size"] == world
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    net = MLP(saved["hyperparameters"]["input_size"], saved["hyperparameters"]["hidden_sizes"])
    net.load_state_dict(saved["state_dict"])
    with np.load(channels["val"] / "val_data.npz") as npz:
        X, y = torch.from_numpy(npz["X_val"]), torch.from_numpy(npz["y_val"]).float()
    with torch.no_grad():
        logits = net(X).squeeze(-1)
    assert metrics["val_loss"] == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item(),
                                                abs=1e-5)
    assert metrics["val_acc"] == pytest.approx(binary_accuracy(torch.sigmoid(logits), y.int()).item(), abs=1e-6)
    assert metrics["val_auroc"] == pytest.approx(binary_auroc(torch.sigmoid(logits), y.int()).item(), abs=1e-5)
    # Rank 0's final parameters are the ones saved.
    for key, values in ranks[0]["params"].items():
        np.testing.assert_allclose(saved["state_dict"][key].flatten().numpy(), values)


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

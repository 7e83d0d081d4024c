"""Tensor parallelism is real: `--strategy tensor_parallel` splits every paired layer across the
processes of a tensor-parallel group, trains exactly what one process trains, and saves a whole model.

The multi-process runs use `tests.tp_probe` strategies, which record per rank the loss of every
training step, the row ids it trained on (feature column 0 of the synthetic data) and the local
shape of each parameter it holds. Losses and weights are compared within 1e-5: the split matrix
products sum their partial results in another order than one process does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from launch.jobs.container import free_port
from tests.helpers import clean_env, dry_run_summary, finish_all, id_channels, start
from tests.test_environment import plan_in
from titanic_lightning.errors import UsageError
from titanic_lightning.model import parallel

TOLERANCE = 1e-5
HIDDEN = "[8, 6, 4]"  # three hidden layers: pairs (8-wide, 6-wide), (4-wide, output)


# --- the plan, without processes -------------------------------------------------------------


@pytest.mark.parametrize(("hidden", "split"), [([], []), ([8], [0]), ([64, 32], [0]), ([8, 6, 4], [0, 2]),
                                               ([8, 6, 4, 2], [0, 2])])
def test_the_first_layer_of_each_pair_is_split(hidden, split):
    assert parallel.split_widths(hidden) == split
    net = parallel.tensor_parallel_plan(__import__("titanic_lightning.model.network", fromlist=["MLP"]).MLP(5, hidden))
    kinds = [type(style).__name__ for style in net.values()]
    assert kinds == ["ColwiseParallel", "RowwiseParallel"] * len(split)


def test_a_size_that_does_not_divide_a_split_width_names_it():
    parallel.check_widths([64, 30], 4)  # 30 is the input of a row-wise split: its rows are not divided
    with pytest.raises(UsageError, match=r"--tensor_parallel_size 3 does not divide 64, the width of hidden layer 1"):
        parallel.check_widths([64, 32], 3)
    with pytest.raises(UsageError, match=r"does not divide 6, the width of hidden layer 3"):
        parallel.check_widths([8, 5, 6], 4)


def test_the_plan_splits_processes_into_tensor_and_data_parallel_groups():
    sm = {"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0"}
    plan = plan_in(sm, 0, strategy="tensor_parallel", cpu_processes=2)[0]
    assert (plan.world_size, plan.tensor_parallel_size, plan.data_parallel_size) == (4, 2, 2)
    torchrun = {"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "x"}
    assert plan_in(torchrun, 0, strategy="tensor_parallel", tensor_parallel_size=8)[0].data_parallel_size == 1
    assert plan_in(torchrun, 0, strategy="ddp")[0].tensor_parallel_size is None
    with pytest.raises(UsageError, match=r"--tensor_parallel_size 3: does not divide the 8 process"):
        plan_in(torchrun, 0, strategy="tensor_parallel", tensor_parallel_size=3)[0]
    with pytest.raises(UsageError, match=r"--tensor_parallel_size 2: used only with --strategy tensor_parallel"):
        plan_in(torchrun, 0, strategy="ddp", tensor_parallel_size=2)[0]


def test_the_strategy_is_lightnings_model_parallel_with_a_gathered_checkpoint():
    from lightning.pytorch.strategies import ModelParallelStrategy

    from titanic_lightning.training.strategies import build_strategy

    plan = plan_in({"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"},
                   strategy="tensor_parallel")[0]
    strategy = build_strategy(plan)
    assert isinstance(strategy, ModelParallelStrategy)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (2, 2)
    assert strategy._save_distributed_checkpoint is False and strategy.process_group_backend == "gloo"


def test_slice_dropout_keeps_the_slice_of_one_process_mask():
    x = torch.ones(3, 8)
    torch.manual_seed(5)
    whole = torch.nn.functional.dropout(x, 0.5)
    for index in range(2):
        torch.manual_seed(5)
        part = parallel.SliceDropout(0.5, index, 2)(x[:, index * 4:(index + 1) * 4])
        assert torch.equal(part, whole[:, index * 4:(index + 1) * 4])


def test_a_bad_tensor_parallel_size_stops_the_entry_before_work(tmp_path, capsys):
    from entry.train import main
    from tests.helpers import invoke

    channels = id_channels(tmp_path / "data")
    code, out, err = invoke(main, ["--train", str(channels["train"]), "--val", str(channels["val"]),
                                   "--model_dir", str(tmp_path / "m"), "--output_dir", str(tmp_path / "o"),
                                   "--strategy", "tensor_parallel", "--cpu_processes", "2",
                                   "--hidden_sizes", "[7, 4]"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1:] == [
        "error: --tensor_parallel_size 2 does not divide 7, the width of hidden layer 1 of --hidden_sizes [7, 4]: "
        "tensor parallelism splits that layer's units evenly among 2 processes"]
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


# --- processes --------------------------------------------------------------------------------


def _train(tmp: Path, name: str, channels, strategy: str, *extra: str, tp: int = 1, torchrun: int = 0) -> dict:
    """One run of the entry; returns {"ranks": [per-rank probe records], "model": model.pt, "out": output}."""
    probe = tmp / name / "probe"
    probe.mkdir(parents=True)
    args = ["-m", "entry.train", "--train", str(channels["train"]), "--val", str(channels["val"]), "--epochs", "3",
            "--early_stopping", "false", "--batch_size", "8", "--hidden_sizes", HIDDEN, "--strategy", strategy,
            "--process_group_timeout", "60", "--model_dir", str(tmp / name / "model"),
            "--output_dir", str(tmp / name / "out"), *extra]
    if torchrun:
        args = ["-m", "torch.distributed.run", f"--nproc_per_node={torchrun}", f"--master_port={free_port()}", *args]
    env = clean_env(PROBE_DIR=str(probe), TP_SIZE=str(tp), OMP_NUM_THREADS="1")
    [(code, out)] = finish_all([start(args, env, tmp)], timeout=120)
    assert code == 0, out[-3000:]
    ranks = [json.loads(p.read_text()) for p in sorted(probe.iterdir(), key=lambda p: int(p.stem[4:]))]
    model = torch.load(tmp / name / "model" / "model.pt", weights_only=True)
    return {"ranks": ranks, "model": model, "out": out}


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=TOLERANCE, msg=key)


@pytest.mark.slow
def test_two_processes_split_the_layers_and_train_what_one_process_trains(tmp_path):
    channels = id_channels(tmp_path / "data")
    one = _train(tmp_path, "one", channels, "tests.tp_probe:single")
    tp = _train(tmp_path, "tp", channels, "tests.tp_probe:tensor_parallel", "--cpu_processes", "2", tp=2)

    [reference] = one["ranks"]
    assert [r["world_size"] for r in tp["ranks"]] == [2, 2]
    for rank in tp["ranks"]:
        # Each rank holds half of every split weight (and never the whole matrix); the output
        # layer's bias and the row-wise biases are whole on both.
        shapes = {k: (v["local"], v["global"]) for k, v in rank["shapes"].items()}
        assert shapes["0.weight"] == ([4, 4], [8, 4]) and shapes["0.bias"] == ([4], [8])
        assert shapes["2.weight"] == ([6, 4], [6, 8]) and shapes["2.bias"] == ([6], [6])
        assert shapes["4.weight"] == ([2, 6], [4, 6]) and shapes["4.bias"] == ([2], [4])
        assert shapes["6.weight"] == ([1, 2], [1, 4]) and shapes["6.bias"] == ([1], [1])
        assert all(v["dtensor"] for v in rank["shapes"].values())
        # Both ranks of the group trained on the same batches, all of them, as the single process did.
        assert rank["rows"] == reference["rows"]
        np.testing.assert_allclose(rank["losses"], reference["losses"], rtol=0, atol=TOLERANCE)
    assert len(reference["losses"]) == 3 * 13  # 101 rows in batches of 8, three epochs
    # model.pt holds the whole weights, gathered, equal to the single process's.
    _same_weights(tp["model"]["state_dict"], one["model"]["state_dict"])
    metrics = tp["model"]["metrics"]
    assert metrics["world_size"] == 2
    for key in ("val_loss", "val_acc", "val_auroc", "val_f1"):
        assert metrics[key] == pytest.approx(one["model"]["metrics"][key], abs=TOLERANCE), key


@pytest.mark.slow
def test_data_parallel_by_tensor_parallel_trains_what_ddp_trains(tmp_path):
    """Four processes as a 2 x 2 mesh (two data-parallel groups of two tensor-parallel processes,
    FSDP2 across the groups) equal two DDP processes: the same batches, losses and weights."""
    channels = id_channels(tmp_path / "data")
    ddp = _train(tmp_path, "ddp", channels, "tests.tp_probe:ddp", torchrun=2)
    mesh = _train(tmp_path, "mesh", channels, "tests.tp_probe:tensor_parallel", tp=2, torchrun=4)

    assert [r["world_size"] for r in mesh["ranks"]] == [4] * 4
    for rank in mesh["ranks"]:
        # Mesh rows are data-parallel groups: global ranks 0, 1 are data-parallel rank 0.
        twin = ddp["ranks"][rank["rank"] // 2]
        assert rank["rows"] == twin["rows"]
        np.testing.assert_allclose(rank["losses"], twin["losses"], rtol=0, atol=TOLERANCE)
        # Split by tensor parallelism (half the units), then by FSDP2 (half the rows of that).
        assert rank["shapes"]["0.weight"] == {"local": [2, 4], "global": [8, 4], "dtensor": True}
    # The two data-parallel groups took different batches.
    assert set(mesh["ranks"][0]["rows"][:8]).isdisjoint(mesh["ranks"][2]["rows"][:8])
    _same_weights(mesh["model"]["state_dict"], ddp["model"]["state_dict"])


def _tensor_parallel_run(prepared: Path, tmp: Path, name: str, epochs: int, checkpoints: Path) -> tuple[int, str]:
    args = ["-m", "entry.train", "--train", str(prepared / "train_data.npz"), "--val", str(prepared / "val_data.npz"),
            "--test", str(prepared / "test_data.npz"), "--preprocessing", str(prepared / "preprocessing.json"),
            "--epochs", str(epochs), "--early_stopping", "false", "--batch_size", "64", "--dropout", "0.2",
            "--strategy", "tensor_parallel", "--cpu_processes", "2", "--process_group_timeout", "60",
            "--model_dir", str(tmp / name / "model"), "--output_dir", str(tmp / name / "out"),
            "--checkpoint_dir", str(checkpoints)]
    [(code, out)] = finish_all([start(args, clean_env(OMP_NUM_THREADS="1"), tmp)], timeout=120)
    assert code == 0, out[-3000:]
    return code, out


@pytest.mark.slow
def test_the_saved_model_scores_held_out_passengers_as_the_split_one_did_and_resumes_exactly(prepared, tmp_path):
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc

    from titanic_lightning.model.network import MLP
    from titanic_lightning.training.checkpoints import read_checkpoint

    _, out = _tensor_parallel_run(prepared, tmp_path, "whole", 4, tmp_path / "whole-ckpt")
    assert "strategy=tensor_parallel (ModelParallelStrategy)" in out and "world_size=2; global_rank=1;" in out
    saved = torch.load(tmp_path / "whole" / "model" / "model.pt", weights_only=True)
    metrics = saved["metrics"]
    assert metrics["tensor_parallel_size"] == 2 and metrics["world_size"] == 2
    assert metrics["train_rows_per_second"] is not None

    # The test metrics were computed by the two processes on their halves of every layer; the
    # gathered weights, loaded in one plain MLP, give the same scores on the held-out passengers.
    hp = saved["hyperparameters"]
    net = MLP(hp["input_size"], hp["hidden_sizes"], hp["dropout"]).eval()
    net.load_state_dict(saved["state_dict"])
    with np.load(prepared / "test_data.npz") as npz:
        X, y = torch.from_numpy(npz["X_test"]), torch.from_numpy(npz["y_test"]).float()
    with torch.no_grad():
        logits = net(X).squeeze(-1)
    probabilities = torch.sigmoid(logits)
    assert metrics["test_loss"] == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item(), abs=TOLERANCE)
    assert metrics["test_acc"] == pytest.approx(binary_accuracy(probabilities, y.int()).item(), abs=1e-6)
    assert metrics["test_auroc"] == pytest.approx(binary_auroc(probabilities, y.int()).item(), abs=TOLERANCE)
    # entry.predict scores the raw held-out rows with model.pt as it does any model's.
    from tests.helpers import run_entry

    predicted = run_entry("predict", "--model", str(tmp_path / "whole" / "model"),
                          "--csv", str(prepared / "test_passengers.csv"), "--out", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    import pandas as pd

    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")["probability"], probabilities.numpy(), atol=1e-6)
    # So do the serving handler, loaded from the model's own code/ as the serving container loads it,
    # and the exporter.
    import subprocess
    import sys

    from tests.helpers import clean_env

    handler = ("import sys\nsys.path.insert(0, sys.argv[1] + '/code')\n"
               "from inference import input_fn, model_fn, output_fn, predict_fn\n"
               "body = open(sys.argv[2], 'rb').read()\n"
               "print(output_fn(predict_fn(input_fn(body, 'text/csv'), model_fn(sys.argv[1])), 'application/json')[0])\n")
    served = subprocess.run([sys.executable, "-c", handler, str(tmp_path / "whole" / "model"),
                             str(prepared / "test_passengers.csv")], capture_output=True, text=True, cwd=tmp_path,
                            env=clean_env(), timeout=120)
    assert served.returncode == 0, served.stderr[-2000:]
    answers = json.loads(served.stdout)["predictions"]
    np.testing.assert_allclose([a["probability"] for a in answers], probabilities.numpy(), atol=1e-6)
    exported = run_entry("export", "--model", str(tmp_path / "whole" / "model"), "--format", "torchscript",
                         "--out", str(tmp_path / "titanic.pt"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert torch.jit.load(str(tmp_path / "titanic.pt")) is not None

    # last.ckpt is one file of whole weights, which a run with two processes continues exactly.
    checkpoint = read_checkpoint(tmp_path / "whole-ckpt" / "last.ckpt")
    assert {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()} == {
        f"net.{k}": tuple(v.shape) for k, v in saved["state_dict"].items()}
    _tensor_parallel_run(prepared, tmp_path, "first", 2, tmp_path / "ckpt")
    _, out = _tensor_parallel_run(prepared, tmp_path, "rest", 4, tmp_path / "ckpt")
    assert "resuming from" in out and "2 epoch(s) already done" in out
    resumed = torch.load(tmp_path / "rest" / "model" / "model.pt", weights_only=True)
    _same_weights(resumed["state_dict"], saved["state_dict"])
    for key in ("val_loss", "test_loss", "best_epoch"):
        assert resumed["metrics"][key] == pytest.approx(metrics[key], abs=1e-6), key


# --- the launcher -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_submission_runs_cpu_processes_per_instance_under_torchrun(capsys, monkeypatch):
    from tests.helpers import BUCKET, submit_inprocess

    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    code, out, err = submit_inprocess(["--dry-run", "--bucket", BUCKET, "--instance-count", "2", "--hp",
                                       "strategy=tensor_parallel", "--hp", "cpu_processes=2"], capsys)
    assert code == 0, err
    assert dry_run_summary(err)["distributed"] == {"type": "torchrun", "process_count_per_node": 2}
    # Data parallelism keeps the driver's default, one process per GPU, else one.
    code, out, err = submit_inprocess(["--dry-run", "--bucket", BUCKET, "--instance-count", "2", "--hp",
                                       "strategy=ddp", "--hp", "cpu_processes=2"], capsys)
    assert dry_run_summary(err)["distributed"] == {"type": "torchrun", "process_count_per_node": None}


@pytest.mark.slow
def test_torchrun_gets_cpu_processes_only_when_it_starts_the_processes():
    from launch.jobs.checks import build_spec

    spec = build_spec(instance_count=2, hp=["strategy=tensor_parallel", "cpu_processes=2"])
    assert spec.process_count_per_node == 2
    assert build_spec(instance_count=1, hp=["strategy=tensor_parallel", "cpu_processes=2"]).process_count_per_node is None


@pytest.mark.slow
def test_two_local_hosts_of_two_processes_train_one_tensor_parallel_model(prepared, tmp_path):
    import shutil
    import tarfile

    from tests.helpers import submit_subprocess

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    result = submit_subprocess(["--local", "--json", "--instance-count", "2", "--data", str(data),
                                "--hp", "strategy=tensor_parallel", "--hp", "cpu_processes=2", "--hp", "epochs=3"],
                               cwd=tmp_path, timeout=180)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0 and summary["status"] == "Completed", result.stderr[-3000:]
    assert "--nproc_per_node=2" in summary["command"] and "--nnodes=2" in summary["command"]
    with tarfile.open(summary["model_artifact"]) as tar:
        metrics = json.load(tar.extractfile("metrics.json"))
        assert "model.pt" in tar.getnames()
    assert (metrics["world_size"], metrics["num_nodes"], metrics["tensor_parallel_size"]) == (4, 2, 2)

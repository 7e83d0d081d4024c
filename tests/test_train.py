"""entry.train end to end: the lesson's command, a fresh clone, SageMaker's form, and bad flags."""

from __future__ import annotations

import json
import math
import re
import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from tests.helpers import clean_env, run_entry
from titanic_lightning.config import TrainConfig, parse_train_args
from titanic_lightning.data.datamodule import TitanicDataModule
from titanic_lightning.errors import UsageError
from titanic_lightning.model.module import TitanicClassifier
from titanic_lightning.model.network import MLP
from titanic_lightning.training.train import train

METRICS_KEYS = {"val_loss", "val_acc", "val_auroc", "test_acc", "best_epoch", "epochs_run", "wall_seconds",
                "accelerator", "world_size"}
LINE = re.compile(r"(\w+)=([-+0-9.eE]+);")


def _check_model_dir(model_dir, *, with_test=True, with_preprocessing=True):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert METRICS_KEYS - ({"test_acc"} if not with_test else set()) <= set(metrics)
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    assert saved["metrics"] == metrics
    net = MLP(saved["hyperparameters"]["input_size"], saved["hyperparameters"]["hidden_sizes"])
    net.load_state_dict(saved["state_dict"])
    assert (saved["preprocessing"] is not None) == with_preprocessing
    return metrics, saved


def test_lesson_command_unchanged(tmp_path, prepared):
    for name in ("train_data.npz", "val_data.npz", "preprocessing.json"):
        shutil.copy(prepared / name, tmp_path / name)
    result = run_entry("train", "--train", "train_data.npz", "--val", "val_data.npz", "--epochs", "5",
                       "--learning_rate", "0.001", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch=")]
    assert 1 <= len(epoch_lines) <= 5
    assert {"train_loss", "val_loss", "val_acc", "val_auroc"} <= dict(LINE.findall(epoch_lines[0])).keys()
    final = [line for line in result.stdout.splitlines() if line.startswith("final: ")]
    assert len(final) == 1
    values = {k: float(v) for k, v in LINE.findall(final[0])}
    metrics, saved = _check_model_dir(tmp_path / "model", with_test=False)
    assert values["val_acc"] == pytest.approx(metrics["val_acc"], abs=1e-4)
    assert 0.6 <= metrics["val_acc"] <= 1.0 and 0.3 <= metrics["val_loss"] <= 0.7 and metrics["val_auroc"] > 0.7
    assert metrics["epochs_run"] == 5 and metrics["world_size"] == 1 and metrics["accelerator"] == "cpu"
    assert saved["preprocessing"]["feature_names"] == json.loads((prepared / "preprocessing.json").read_text())[
        "feature_names"]


@pytest.mark.slow
def test_fresh_clone_with_no_arguments_does_the_whole_job(tmp_path, titanic_csv):
    result = run_entry("train", cwd=tmp_path, env=clean_env(TITANIC_CSV=str(titanic_csv)))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "train_data.npz").is_file()
    metrics, _ = _check_model_dir(tmp_path / "model")
    # Early stopping ends well before the 500-epoch cap; the best weights are the ones evaluated.
    assert metrics["epochs_run"] < 200 and 1 <= metrics["best_epoch"] <= metrics["epochs_run"]
    assert metrics["test_acc"] > 0.75
    outputs = tmp_path / "outputs"
    assert (outputs / "curves.png").stat().st_size > 10_000
    assert "val_loss" in (outputs / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert list((outputs / "tensorboard").glob("events.out.tfevents.*"))


def test_sagemaker_environment_and_string_hyperparameters(tmp_path, prepared):
    channels = {}
    for split in ("train", "val", "test"):
        channels[split] = tmp_path / "input" / "data" / split
        channels[split].mkdir(parents=True)
        shutil.copy(prepared / f"{split}_data.npz", channels[split])
    shutil.copy(prepared / "preprocessing.json", channels["train"])
    env = clean_env(
        SM_CHANNEL_TRAIN=str(channels["train"]), SM_CHANNEL_VAL=str(channels["val"]),
        SM_CHANNEL_TEST=str(channels["test"]), SM_MODEL_DIR=str(tmp_path / "opt-model"),
        SM_OUTPUT_DATA_DIR=str(tmp_path / "opt-output"), SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1",
        SM_NUM_GPUS="0", SM_NUM_CPUS="2",
    )
    result = run_entry("train", "--epochs", "3", "--early_stopping", "false", "--hidden_sizes", "[16, 8]",
                       "--batch_size", "64", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    metrics, saved = _check_model_dir(tmp_path / "opt-model")
    assert metrics["epochs_run"] == 3 and saved["hyperparameters"]["hidden_sizes"] == [16, 8]
    assert (tmp_path / "opt-output" / "curves.png").is_file()
    assert not (tmp_path / "model").exists() and not (tmp_path / "data").exists()


def test_misspelled_hyperparameter_fails_with_its_name(tmp_path):
    result = run_entry("train", "--epoch", "5", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: unrecognized arguments: --epoch 5"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--learning_rate", "0"], "--learning_rate"), (["--learning_rate", "abc"], "--learning_rate"),
     (["--epochs", "0"], "--epochs"), (["--batch_size", "0"], "--batch_size"),
     (["--hidden_sizes", "[0]"], "--hidden_sizes"), (["--early_stopping", "maybe"], "--early_stopping"),
     (["--dropout", "1.0"], "--dropout"), (["--optimizer", "sgd"], "--optimizer")],
)
def test_bad_values_name_their_flag(argv, flag):
    with pytest.raises(UsageError) as err:
        parse_train_args(argv)
    assert str(err.value).startswith(flag) and "\n" not in str(err.value)


def test_help_lists_defaults_without_importing_torch(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "entry.train", "--help"], cwd=tmp_path,
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--train", "--val", "--test", "--epochs", "--learning_rate", "--batch_size", "--seed",
                 "--model_dir", "--early_stopping", "--patience", "--strategy"):
        assert flag in result.stdout
    assert "default: 500" in " ".join(result.stdout.split())
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "lightning")}


def test_fast_dev_run_on_tiny_data(tiny_channels):
    dm = TitanicDataModule(tiny_channels["train"], tiny_channels["val"], tiny_channels["test"], batch_size=8)
    model = TitanicClassifier(input_size=dm.num_features, hidden_sizes=[8])
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                         use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    assert {"train_loss", "val_loss", "val_acc", "val_auroc"} <= set(trainer.logged_metrics)
    trainer.test(model, datamodule=dm, verbose=False)
    assert {"test_loss", "test_acc", "test_auroc", "test_f1"} <= set(trainer.logged_metrics)
    probabilities = torch.cat(trainer.predict(model, datamodule=dm))
    assert probabilities.shape == (24,) and bool(((probabilities >= 0) & (probabilities <= 1)).all())


def test_user_npz_without_preprocessing_still_trains(tmp_path, tiny_channels, monkeypatch):
    from entry.train import main

    # tmp_path/data/ holds a default test channel: explicit --train/--val must not pick it up.
    monkeypatch.chdir(tmp_path)
    main(["--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"]), "--epochs", "2",
          "--model_dir", str(tmp_path / "m"), "--output_dir", str(tmp_path / "o")])
    metrics, _ = _check_model_dir(tmp_path / "m", with_test=False, with_preprocessing=False)
    assert metrics["epochs_run"] == 2


def _tiny_config(tmp_path, channels, **overrides) -> TrainConfig:
    return TrainConfig(train=str(channels["train"]), val=str(channels["val"]), test=str(channels["test"]),
                       epochs=2, hidden_sizes=[8], model_dir=str(tmp_path / "m"), output_dir=str(tmp_path / "o"),
                       **overrides)


def test_train_returns_the_metrics_it_saved_and_their_paths(tmp_path, tiny_channels, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(_tiny_config(tmp_path, tiny_channels))
    assert result.model_dir == tmp_path / "m" and result.output_dir == tmp_path / "o"
    assert result.model_file == tmp_path / "m" / "model.pt" and result.model_file.is_file()
    assert result.metrics_file == tmp_path / "m" / "metrics.json"
    assert result.metrics == json.loads(result.metrics_file.read_text())
    assert result.metrics == torch.load(result.model_file, weights_only=True)["metrics"]
    assert result.curves == tmp_path / "o" / "curves.png" and result.curves.stat().st_size > 10_000
    assert result.metrics["epochs_run"] == 2 and "test_acc" in result.metrics
    assert result.wall_seconds == result.metrics["wall_seconds"] > 0
    assert result.fit_seconds == result.metrics["fit_seconds"] > 0


def test_train_fast_dev_run_returns_metrics_and_no_paths(tmp_path, tiny_channels, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = train(_tiny_config(tmp_path, tiny_channels, fast_dev_run=2))
    assert result.metrics is not None and {"val_acc", "test_acc", "best_epoch"} <= set(result.metrics)
    assert (result.model_dir, result.model_file, result.metrics_file, result.output_dir, result.curves) == (
        None, None, None, None, None)
    assert result.wall_seconds == result.metrics["wall_seconds"]
    assert not (tmp_path / "m").exists() and not (tmp_path / "o").exists()


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # the step is called without a Trainer
def test_an_evaluation_epoch_is_scored_as_torchmetrics_scores_all_of_its_rows():
    from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score

    torch.manual_seed(0)
    model = TitanicClassifier(input_size=3, hidden_sizes=[4])
    batches = [(torch.randn(n, 3), (torch.rand(n) > 0.5).float()) for n in (7, 1, 12)]  # uneven, as shards are
    with torch.no_grad():
        for batch in batches:
            model.validation_step(batch, 0)
        values = {"val_loss": model.eval_loss["val"].compute(), **model.scores["val"].compute()}
        logits = torch.cat([model(x) for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    expected = {"val_loss": torch.nn.functional.binary_cross_entropy_with_logits(logits, labels),
                "val_acc": BinaryAccuracy()(logits.sigmoid(), labels.int()),
                "val_auroc": BinaryAUROC()(logits.sigmoid(), labels.int()),
                "val_f1": BinaryF1Score()(logits.sigmoid(), labels.int())}
    assert values.keys() == expected.keys()
    for name, value in expected.items():
        assert float(values[name]) == pytest.approx(float(value), rel=1e-6), name


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # the step is called without a Trainer
def test_auroc_of_a_split_with_one_class_is_undefined_not_zero():
    model = TitanicClassifier(input_size=3, hidden_sizes=[4])
    with torch.no_grad():
        model.validation_step((torch.randn(5, 3), torch.ones(5)), 0)
    scores = model.scores["val"].compute()
    assert math.isnan(float(scores["val_auroc"]))
    assert float(scores["val_acc"]) >= 0 and not math.isnan(float(scores["val_f1"]))


def test_a_split_of_one_class_reports_its_auroc_as_undefined(tmp_path, tiny_channels, monkeypatch, capsys):
    """null in metrics.json, nan in the printed lines (no SageMaker metric regex reads it), not 0."""
    from tests.helpers import write_channel

    monkeypatch.chdir(tmp_path)
    survivors = write_channel(tmp_path / "one" / "test_data.npz", "test", rows=10, y_test=np.ones(10, dtype="int64"))
    result = train(_tiny_config(tmp_path, {**tiny_channels, "test": survivors}))
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["test_auroc"] is None and result.metrics["test_auroc"] is None
    assert metrics["test_acc"] is not None and metrics["val_auroc"] is not None
    final = [line for line in capsys.readouterr().out.splitlines() if line.startswith("final: ")]
    assert "test_auroc=nan;" in final[0]


def test_tensorboard_holds_every_curve_of_metrics_csv(tmp_path, tiny_channels, monkeypatch):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    train(_tiny_config(tmp_path, tiny_channels))  # two epochs
    with open(tmp_path / "o" / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Each epoch's validation and training values (Lightning logs them apart), then the best weights'
    # validation and test.
    assert len(rows) == 2 * 2 + 2
    curves = {k: [(int(r["step"]), float(r[k])) for r in rows if r[k]] for k in rows[0] if k != "step"}
    # Lightning closes the writer when fit ends; the evaluation after it writes a second file.
    board_dir = tmp_path / "o" / "tensorboard"
    board = EventAccumulator(str(board_dir))
    board.Reload()
    assert set(board.Tags()["scalars"]) == set(curves)
    for tag, points in curves.items():
        # TensorBoard keeps 32-bit floats; the CSV the same values printed in full.
        expected = [(step, float(torch.tensor(value, dtype=torch.float32))) for step, value in points]
        # Across the event files (one per writer) TensorBoard's order is by file name, not time.
        assert sorted((e.step, e.value) for e in board.Scalars(tag)) == sorted(expected), tag


def test_the_run_ends_with_its_training_time_and_whole_process_time(tmp_path, tiny_channels, monkeypatch, capsys):
    """As the lesson prints "Local training time": the last line gives fit and whole-command seconds, and no
    SageMaker metric regex reads anything from it (the `final:` line stays the metrics' last source)."""
    from entry.train import main
    from launch.jobs.spec import METRIC_DEFINITIONS

    monkeypatch.chdir(tmp_path)
    main(["--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"]), "--epochs", "2",
          "--model_dir", str(tmp_path / "m"), "--output_dir", str(tmp_path / "o")])
    lines = capsys.readouterr().out.strip().splitlines()
    match = re.fullmatch(r"training time: ([0-9.]+) s \(fit\), whole process ([0-9.]+) s", lines[-1])
    assert match, lines[-1]
    fit, whole = map(float, match.groups())
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert fit == pytest.approx(metrics["fit_seconds"], abs=0.0051) and 0 < fit <= whole
    assert whole >= metrics["wall_seconds"] - 0.05
    assert lines[-2].startswith("final: ")
    assert not any(re.search(m["Regex"], lines[-1]) for m in METRIC_DEFINITIONS)


def test_epoch_values_reach_loggers_and_callbacks_once_per_epoch(tiny_channels, tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    from titanic_lightning.contracts import EPOCH_METRICS

    epochs = 30
    dm = TitanicDataModule(tiny_channels["train"], tiny_channels["val"], tiny_channels["test"], batch_size=1000)
    model = TitanicClassifier(input_size=dm.num_features, hidden_sizes=[8])
    seen = []

    class Seen(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append({k: float(trainer.callback_metrics[k]) for k in EPOCH_METRICS})

    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=CSVLogger(tmp_path, name="csv", version=""),
                         callbacks=[Seen()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
                         log_every_n_steps=1)
    trainer.fit(model, datamodule=dm)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged: dict[int, dict] = {}
    for row in rows:  # an epoch's validation values and its training loss come in two rows
        assert int(row["step"]) == int(row["epoch"])  # Lightning's step: batches trained before (one per epoch)
        logged.setdefault(int(row["epoch"]), {}).update({k: float(v) for k, v in row.items() if k in EPOCH_METRICS and v})
    assert sorted(logged) == list(range(epochs)) and len(rows) == 2 * epochs
    assert [logged[epoch] for epoch in range(epochs)] == seen  # the same floats, written as text
    assert set(EPOCH_METRICS) <= set(trainer.logged_metrics)


# Run in a fresh interpreter: stops at Trainer.fit and writes the names of the modules loaded so far.
_MODULES_AT_FIT = """
import os, runpy, sys
import lightning.pytorch as pl

def fit(self, *args, **kwargs):
    with open(os.environ["MODULES_OUT"], "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
    os._exit(0)

pl.Trainer.fit = fit
sys.argv = ["entry.train"]
runpy.run_module("entry.train", run_name="__main__")
"""


@pytest.mark.slow
def test_a_run_on_prepared_data_loads_no_data_tooling_before_fit(prepared, tmp_path):
    import subprocess
    import sys

    shutil.copytree(prepared, tmp_path / "data")  # a clone whose data/ is already prepared
    out = tmp_path / "modules.txt"
    result = subprocess.run([sys.executable, "-c", _MODULES_AT_FIT], cwd=tmp_path, env=clean_env(MODULES_OUT=str(out)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {name.split(".")[0] for name in out.read_text().split()}
    assert not loaded & {"pandas", "sklearn", "tensorboard", "pyarrow"}
    # Lightning imports torchmetrics, which loads matplotlib where it is installed: only that much is allowed.
    lightning_alone = subprocess.run([sys.executable, "-c", "import sys, lightning; print('matplotlib' in sys.modules)"],
                                     env=clean_env(), capture_output=True, text=True, timeout=120)
    assert ("matplotlib" in loaded) <= (lightning_alone.stdout.strip() == "True")


@pytest.mark.slow
def test_a_run_prints_its_own_lines_only(tmp_path, tiny_channels):
    """No Lightning notes or warnings a user cannot act on: not on a first run, not on a run into the
    same folders with a checkpoint to resume, not under two processes, and not where `srun` is installed
    but the run is no SLURM job. `--debug` still shows them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}:{clean_env()['PATH']}")
    channels = ["--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"])]
    ours = ("process: ", "saved ", "resuming from ", "warning: no preprocessing.json")
    two = ["--cpu_processes", "2", "--model_dir", "m2", "--output_dir", "o2", "--checkpoint_dir", "ck2"]
    for epochs, extra in (("2", []), ("3", []), ("2", two), ("3", two)):
        result = run_entry("train", *channels, "--epochs", epochs, *(extra or ["--checkpoint_dir", "ck"]), cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        lines = result.stderr.splitlines()
        assert [line for line in lines if not line.startswith(ours)] == [], result.stderr
        said = [line for line in lines if not line.startswith("process: ")]
        assert len(said) == len(set(said)), result.stderr  # said once, not once per process
    result = run_entry("train", *channels, "--epochs", "4", "--checkpoint_dir", "ck", "--debug", "true", cwd=tmp_path, env=env)
    assert "GPU available" in result.stderr and "srun" in result.stderr

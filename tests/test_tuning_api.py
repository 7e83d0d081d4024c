"""Tuning from Python (`launch.tune_local`, `launch.tune_sagemaker`, `launch.tuning_request`): the
command line's checks and plan, the request moto's SageMaker receives, and the `Tuning` a search
returns (its trials run by a stand-in here; the real search runs in test_tune.py and the notebook)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

import launch
from launch.tune import _main
from launch.tuning import local as local_search
from launch.tuning import trials as local_trials
from tests.helpers import BUCKET, REGION, ROLE, dry_run_summary, invoke


@pytest.fixture
def data_dir(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    return out


@pytest.mark.parametrize("options, says", [
    ({"trials": 0}, "--trials 0: must be at least 1"),
    ({"parallel": 0}, "--parallel 0: must be at least 1"),
    ({"trials": "3"}, "tune_local(trials='3'): expected an integer"),
    ({"parallel": True}, "tune_local(parallel=True): expected an integer"),
    ({"timeout_s": float("nan")}, "--timeout nan: must be a finite number of seconds above 0"),
    ({"timeout_s": 0}, "--timeout 0: must be a finite number of seconds above 0"),
    ({"timeout_s": "60"}, "tune_local(timeout_s='60'): expected a number of seconds"),
    ({"search": "annealing"}, "--search annealing: choose from bayesian, random, hyperband, grid"),
    ({"objective": "test_acc"}, "--objective test_acc: choose from val_loss, val_acc, val_auroc"),
    ({"search_seed": 0}, "--search-seed 0: must be 1 or more"),
    ({"prune_after_trials": -1}, "--prune-after-trials -1: must be 0 or more"),
    ({"hyperparameters": {"model_dir": "/tmp/x"}}, "--hp model_dir=...: the tuning sets model_dir for each trial"),
    ({"hyperparameters": {"epochs": 0}}, "--hp epochs=0: --epochs"),
    ({"hyperparameters": {"epochs": 5}, "ranges": {"epochs": (2, 9)}}, "--range epochs=2:9: epochs also has a fixed value"),
    ({"ranges": {"learning_rate": (0.1, 0.01)}}, "--range learning_rate=0.1:0.01: LOW must be below HIGH"),
    ({"ranges": {"learning_rate": (0.0, 0.1, "log")}}, "--range learning_rate=0.0:0.1:log: a logarithmic range needs LOW"),
    ({"ranges": {"learning_rate": (1e-3, float("inf"))}}, "--range learning_rate=0.001:inf: 'inf' is not a finite number"),
    ({"ranges": {"learning_rate": (1e-3, "0.1")}}, "tune_local(ranges={'learning_rate': (0.001, '0.1')}): the bounds must"),
    ({"ranges": {"learning_rate": (1e-3, 0.1, "lin")}}, "tune_local(ranges={'learning_rate': (0.001, 0.1, 'lin')}): expected"),
    ({"ranges": {"optimizer": ["adam"]}}, "tune_local(ranges={'optimizer': ['adam']}): give two or more categories"),
    ({"ranges": {"optimizer": ["adam|sgd", "adamw"]}}, "tune_local(ranges={'optimizer': ['adam|sgd', 'adamw']}): a category"),
    ({"ranges": {"optimizer": ["adam", "sgd"]}}, "--range optimizer=adam|sgd (category sgd): --optimizer"),
    ({"ranges": {"strategy": ["auto", "a'b; rm -rf ~"]}}, "--range strategy=auto|a'b; rm -rf ~ (category a'b; rm -rf ~)"),
    ({"ranges": {"bogus": (1, 2)}}, "--range bogus=1:2: 'bogus' is not a flag of entry/train.py"),
    ({"ranges": {"dropout": {0.1, 0.2}}}, "tune_local(ranges={'dropout': {0.1, 0.2}}): expected (low, high)"),
    ({"ranges": 3}, "tune_local(ranges=3): expected a dict"),
    ({"ranges": {}}, "tune_local(ranges={}): no ranges; give at least one, or None for the default space"),
    ({"ranges": []}, "tune_local(ranges=[]): no ranges"),
    ({"search": "grid"}, "--search grid: --range learning_rate=0.0001:0.1:log is not categorical"),
    ({"search": "grid", "ranges": {"optimizer": ["adam", "adamw"]}, "trials": 2}, "--trials 2 with --search grid"),
    ({"data": 3}, "tune_local(data=3): expected a folder"),
])
def test_a_bad_argument_is_the_flags_line_and_nothing_starts(options, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(launch.UsageError) as caught:
        launch.tune_local(**options)
    message = str(caught.value)
    assert message.startswith(says) and "\n" not in message
    assert list(tmp_path.iterdir()) == []  # no data prepared, no tuning or runs folder


@pytest.mark.parametrize("options, says", [
    ({"max_jobs": 0}, "--max-jobs 0: must be at least 1"),
    ({"max_parallel_jobs": 0}, "--max-parallel-jobs 0: must be at least 1"),
    ({"max_jobs": 2.5}, "tuning_request(max_jobs=2.5): expected an integer"),
    ({"search": "hyperband", "ranges": {"epochs": (2, 9)}}, "--range epochs with --search hyperband"),
])
def test_a_bad_argument_of_the_sagemaker_tuning_is_the_flags_line(options, says):
    with pytest.raises(launch.UsageError) as caught:
        launch.tuning_request(launch.job_spec(), **options)
    assert str(caught.value).startswith(says)
    with pytest.raises(launch.UsageError, match="expected a JobSpec from launch.job_spec"):
        launch.tuning_request({"instance_type": "ml.m5.large"})


# The same search space in Python and as --range flags.
RANGES = {"learning_rate": (1e-4, 0.1, "log"), "batch_size": (16, 128), "dropout": "0.0:0.4",
          "hidden_sizes": [[64, 32], [32]], "early_stopping": [True, False]}
RANGE_FLAGS = ["--range", "learning_rate=0.0001:0.1:log", "--range", "batch_size=16:128", "--range", "dropout=0.0:0.4",
               "--range", "hidden_sizes=[64, 32]|[32]", "--range", "early_stopping=true|false"]


@pytest.mark.slow
def test_the_tuning_request_is_tune_py_dry_run(capsys, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    spec = launch.job_spec(instance_count=2, spot=True, hyperparameters={"epochs": 30})
    request = launch.tuning_request(spec, RANGES, max_jobs=7, max_parallel_jobs=3, objective="val_acc", search="random")
    code, out, err = invoke(_main, ["--dry-run", "--instance-count", "2", "--spot", "--hp", "epochs=30", *RANGE_FLAGS,
                                    "--max-jobs", "7", "--max-parallel-jobs", "3", "--objective", "val_acc",
                                    "--search", "random"], capsys)
    assert code == 0, err
    assert request == dry_run_summary(err)
    assert request["HyperParameterTuningJobConfig"]["ParameterRanges"]["CategoricalParameterRanges"] == [
        {"Name": "hidden_sizes", "Values": ["[64, 32]", "[32]"]}, {"Name": "early_stopping", "Values": ["true", "false"]}]
    # --range strings are taken as they are, and None is the default space less the fixed flags.
    assert launch.tuning_request(spec, RANGE_FLAGS[1::2], max_jobs=7, max_parallel_jobs=3, objective="val_acc",
                                 search="random") == request
    default = launch.tuning_request(launch.job_spec(hyperparameters={"dropout": 0.1}))
    assert {r["Name"] for kind in default["HyperParameterTuningJobConfig"]["ParameterRanges"].values() for r in kind} == {
        "learning_rate", "batch_size", "weight_decay", "hidden_sizes"}


def test_tune_local_plans_the_search_tune_py_local_plans(monkeypatch, capsys, tmp_path):
    plans = []

    def capture(plan, data, out, runs_dir, timeout_s, keep_models):
        plans.append((plan, data, out, runs_dir, timeout_s, keep_models))
        return {"status": "Completed", "tuning_job": "t", "trials": [], "best": None}, None

    monkeypatch.setattr(local_search, "search_here", capture)
    launch.tune_local(RANGES, trials=5, parallel=2, hyperparameters={"epochs": 3, "optimizer": "adamw"}, strategy="ddp",
                      objective="val_auroc", early_stopping=False, search_seed=7, prune_after_trials=2, timeout_s=90,
                      keep_models=True, data=tmp_path / "d", out=tmp_path / "o", runs_dir=tmp_path / "r")
    invoke(_main, ["--local", *RANGE_FLAGS, "--trials", "5", "--parallel", "2", "--hp", "epochs=3", "--hp", "optimizer=adamw",
                   "--strategy", "ddp", "--objective", "val_auroc", "--no-early-stopping", "--search-seed", "7",
                   "--prune-after-trials", "2", "--timeout", "90", "--keep-models", "--data", str(tmp_path / "d"),
                   "--out", str(tmp_path / "o"), "--runs-dir", str(tmp_path / "r")], capsys)
    api, cli = plans
    assert api == cli
    assert api[0].max_jobs == 5 and api[0].static == {"epochs": "3", "optimizer": "adamw", "strategy": "ddp"}
    # Defaults: 10 trials one at a time, median pruning after 5; a grid runs every combination.
    launch.tune_local()
    invoke(_main, ["--local"], capsys)
    (plan, *where), (cli_plan, *cli_where) = plans[2:]
    assert plan == cli_plan and plan.max_jobs == 10 and plan.max_parallel == 1 and plan.prune_after_trials == 5
    # The folders are the same; the function's `out` made absolute, so its summary names it after a chdir.
    assert where[1] == Path("tuning").absolute() and cli_where[1] == Path("tuning") and where[2:] == cli_where[2:]
    assert launch.tune_local({"optimizer": ["adam", "adamw"]}, search="grid").plan.max_jobs is None


@pytest.mark.slow
def test_tune_sagemaker_creates_the_tuning_job_the_request_shows(fresh_aws, bucket, data_dir, tmp_path):
    spec = launch.job_spec(bucket=BUCKET, role=ROLE, hyperparameters={"epochs": 30})
    planned = launch.tuning_request(spec, RANGES, max_jobs=4, objective="val_acc")
    tuned = launch.tune_sagemaker(spec, RANGES, max_jobs=4, objective="val_acc", wait=False, data=data_dir,
                                  out=tmp_path / "t", runs_dir=tmp_path / "r")
    assert tuned.status == "Submitted" and tuned.tuning_job.startswith("titanic-tune-") and tuned.mode is None
    assert tuned.best is None and tuned.best_model is None and tuned.folder is None and tuned.picture is None
    assert tuned.table == f"tuning job {tuned.tuning_job}: Submitted"
    described = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuned.tuning_job)
    assert described["HyperParameterTuningJobConfig"] == planned["HyperParameterTuningJobConfig"]
    assert described["TrainingJobDefinition"]["StaticHyperParameters"]["epochs"] == "30"


def _fake_search(epochs_of_best: int = 2):
    """A stand-in for the Optuna search: three trials (completed, pruned, completed) with the lines'
    metrics; the last one best, with a model file."""

    def search(plan, data_dir, folder, trials, parallel, timeout_s, stop, on_trial_end=None):
        done = []
        for number, (status, val_loss) in enumerate((("Completed", 0.52), ("Pruned", 0.9), ("Completed", 0.41))):
            trial = local_trials.Trial(number=number, hyperparameters={"learning_rate": f"0.00{number + 1}"},
                                       folder=folder / "trials" / str(number), status=status, epochs=epochs_of_best,
                                       exit_code=0 if status == "Completed" else 143, wall_seconds=1.5,
                                       metrics={"val_loss": val_loss, "val_acc": 0.8 - val_loss / 10, "test_acc": 0.79})
            trial.folder.mkdir(parents=True)
            trial.log_file.write_text("epoch=1;\n")
            if number == 2:
                trial.model_dir.mkdir()
                (trial.model_dir / "model.pt").write_bytes(b"weights")
            on_trial_end(trial)
            done.append(trial)
        return done

    return search


def test_tune_local_returns_the_summary_its_picture_and_the_best_model(data_dir, tmp_path, monkeypatch):
    import matplotlib

    monkeypatch.setattr(local_trials, "search", _fake_search())
    monkeypatch.chdir(tmp_path)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a notebook's backend, say: drawing tuning.png must leave it as it is
    try:
        tuned = launch.tune_local({"learning_rate": (1e-3, 1e-2, "log")}, trials=3, data=data_dir)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend)
    assert isinstance(tuned, launch.Tuning) and tuned.ok and tuned.mode == "local" and tuned.stop_signal is None
    assert [t["status"] for t in tuned.trials] == ["Completed", "Pruned", "Completed"]
    assert tuned.best["trial"] == 2 and tuned.best["val_loss"] == 0.41
    assert tuned.best_model == (tmp_path / "tuning" / tuned.tuning_job / "trials" / "2" / "model").resolve()
    assert tuned.folder == tmp_path / "tuning" / tuned.tuning_job
    assert json.loads(tuned.summary_path.read_text()) == tuned.record
    assert tuned.picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = tuned.table.splitlines()
    assert lines[0].split()[:4] == ["trial", "status", "val_loss", "val_acc"] and lines[2].startswith("2*")
    assert repr(tuned) == str(tuned) == tuned.table
    records = {json.loads(p.read_text())["trial"]: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert sorted(records) == [0, 1, 2] and records[1]["status"] == "Pruned"
    # A Tuning's record is what launch.compare reads: a row per trial.
    table = launch.compare(tuned.record).table
    assert f"{tuned.tuning_job}/trial-2" in table


def test_the_compare_example_of_submit_help_counts_each_run_once(data_dir, tmp_path, monkeypatch, capsys):
    """`--compare runs/*.json jobs/*/summary.json tuning/*/tuning.json` names a local job twice (its
    record and its summary.json) and each local trial twice (its record and its row of tuning.json)."""
    from launch import submit
    from launch.jobs.prices import load as load_prices
    from launch.records import report

    monkeypatch.setattr(local_trials, "search", _fake_search())
    monkeypatch.chdir(tmp_path)
    tuned = launch.tune_local({"learning_rate": (1e-3, 1e-2, "log")}, trials=3, data=data_dir)
    job = "titanic-lightning-m5-large-20250101000000-ab12"
    summary = {"status": "Completed", "job_name": job, "job_dir": f"jobs/{job}", "wall_seconds": 20.0,
               "model_artifact": f"jobs/{job}/model.tar.gz", "failure_reason": None, "instance_type": "ml.m5.large",
               "instance_count": 1, "distributed": False, "hosts": [{"host": "algo-1", "exit_code": 0}],
               "metrics": {"val_acc": 0.8, "test_acc": 0.79, "val_loss": 0.45}}
    (tmp_path / "jobs" / job).mkdir(parents=True)
    (tmp_path / "jobs" / job / "summary.json").write_text(json.dumps(summary))
    report.save(report.local_record(summary, load_prices()), tmp_path / "runs")

    example = [line for line in (submit.__doc__ or "").splitlines() if "--compare" in line and "tuning" in line]
    assert example, "submit.py's help shows --compare over records, summaries and tuning results"
    argv = example[0].split("#")[0].split()[2:]  # after `python launch/submit.py`
    argv = [name for pattern in argv for name in (sorted(map(str, Path().glob(pattern))) if "*" in pattern else [pattern])]
    code, out, err = invoke(submit._main, argv, capsys)
    assert code == 0, err
    rows = [line.split()[0] for line in out.splitlines() if line.startswith(("titanic-lightning-", tuned.tuning_job))]
    assert sorted(rows) == sorted([job, *(f"{tuned.tuning_job}-{n:03d}" for n in range(3))]), out

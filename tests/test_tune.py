"""launch/tune.py: the search space checked by the entry's parser, the offline --dry-run request, the
tuning job as moto's SageMaker receives it, the wait for its results, and the local Optuna search
(summary, picture, best model scored by entry.predict, pruning, Ctrl-C)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import boto3
import pytest

from launch.jobs import spec
from launch.tune import _main
from launch.tuning import result as tuning_result
from launch.tuning import tuner
from launch.tuning.space import PRUNE_WARMUP_EPOCHS, build_plan
from tests.helpers import BUCKET, REGION, REPO, ROLE, Recording, clean_env, dry_run_summary, invoke, run_entry

TUNE = REPO / "launch" / "tune.py"


def _dry(argv, capsys):
    return invoke(_main, ["--dry-run", *argv], capsys)


# --- the search space ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec, says", [
    ("learning_rate=1e-3:1e400", "not a finite number"),
    ("learning_rate=nan:1", "not a finite number"),
    ("learning_rate=inf:1", "not a finite number"),
    ("learning_rate=0.1:0.01", "LOW must be below HIGH"),
    ("epochs=5:5", "LOW must be below HIGH"),
    ("learning_rate=0:1:log", "logarithmic range needs LOW above 0"),
    ("weight_decay=-1:1", "--weight_decay"),
    ("dropout=0:1", "--dropout"),  # the entry takes dropout below 1 only
    ("seed=0:4294967296", "--seed"),
    ("batch_size=1.5:3", "'1.5' is not an integer"),
    ("learning_rate=\"0.1\":1", "is not a number"),
    ("learning_rate=1:2:lin", "expected LOW:HIGH or LOW:HIGH:log"),
    ("learning_rate=", "expected LOW:HIGH"),
    ("learning_rate", "expected NAME=LOW:HIGH"),
    ("=1:2", "expected NAME=LOW:HIGH"),
    ("bogus=1:2", "'bogus' is not a flag of entry/train.py"),
    ("model_dir=a|b", "set by the tuning itself"),
    ("hidden_sizes=1:3", "not a numeric flag"),
    ("optimizer=adam|sgd", "(category sgd): --optimizer"),
    ("hidden_sizes=[64, 32]|[0]", "(category [0]): --hidden_sizes"),
    ("features=basic|rich|", "an empty category"),
    ("optimizer=adam|adam", "a category is given twice"),
    ("strategy=auto|a'b; rm -rf ~", "holds \"'\""),
    ("strategy=auto|x\\u0027y", "holds '\\\\'"),
])
def test_a_bad_range_is_one_line_naming_it(spec, says, capsys):
    code, out, err = _dry(["--range", spec], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: --range {spec}"), err
    assert says in err, err


@pytest.mark.parametrize("argv, says", [
    (["--range", "dropout=0:0.5", "--hp", "dropout=0.1"], "also has a fixed value (--hp dropout=0.1)"),
    (["--range", "dropout=0:0.5", "--range", "dropout=0.1:0.2"], "more than one range"),
    (["--search", "grid"], "the default space has numeric ranges"),
    (["--search", "grid", "--range", "dropout=0:0.5"], "is not categorical"),
    (["--search", "grid", "--range", "optimizer=adam|adamw", "--max-jobs", "3"], "a grid runs each of its 2"),
    (["--search", "hyperband", "--range", "epochs=5:50"], "Hyperband decides how many epochs"),
    (["--search", "hyperband", "--hp", "epochs=30000"], "at most 20000 epochs"),
    (["--search", "sobol"], "--search: invalid choice"),
    (["--objective", "test_acc"], "--objective: invalid choice"),
    (["--max-jobs", "0"], "--max-jobs 0: must be at least 1"),
    (["--max-parallel-jobs", "0"], "--max-parallel-jobs 0"),
    (["--search-seed", "0"], "--search-seed 0: must be 1 or more"),
    (["--trials", "3"], "--trials is for --local"),
    (["--local", "--spot"], "--spot is for a SageMaker tuning job"),
    (["--local", "--parallel", "0"], "--parallel 0: must be at least 1"),
    (["--local", "--trials", "0"], "--trials 0: must be at least 1"),
    (["--local", "--search", "grid", "--range", "optimizer=adam|adamw", "--trials", "2"], "--trials 2 with --search grid"),
    (["--local", "--timeout", "nan"], "--timeout: 'nan'"),
    (["--local", "--prune-after-trials", "-1"], "--prune-after-trials -1"),
    (["--hp", "learning_rate=1e400"], "--hp learning_rate=1e400"),
    (["--hp", "dropout=0.1", "--hp", "learning_rate=0.01", "--hp", "batch_size=8", "--hp", "weight_decay=0",
      "--hp", "hidden_sizes=[8]"], "nothing to tune"),
])
def test_conflicting_options_are_one_line(argv, says, capsys, tmp_path):
    if "--local" in argv:
        code, out, err = invoke(_main, [*argv, "--out", str(tmp_path / "t")], capsys)
        assert not (tmp_path / "t").exists()
    else:
        code, out, err = _dry(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and says in err, err


def test_local_refuses_flags_the_tuning_sets(capsys, tmp_path):
    code, out, err = invoke(_main, ["--local", "--hp", f"model_dir={tmp_path}", "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "the tuning sets model_dir for each trial" in err
    assert not (tmp_path / "t").exists()


# --- --dry-run -----------------------------------------------------------------------------------


def test_dry_run_prints_the_request_with_the_default_space(capsys, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AWS_", "SAGEMAKER_")):
            monkeypatch.delenv(key)
    code, out, err = _dry(["--objective", "val_acc", "--max-jobs", "12", "--max-parallel-jobs", "3", "--hp", "epochs=40",
                           "--spot"], capsys)
    assert code == 0, err
    request = dry_run_summary(err)  # the whole of stdout is one JSON object
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_acc"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"},
        {"Name": "dropout", "MinValue": "0.0", "MaxValue": "0.5", "ScalingType": "Linear"},
        {"Name": "weight_decay", "MinValue": "1e-06", "MaxValue": "0.01", "ScalingType": "Logarithmic"}]
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "batch_size", "MinValue": "16", "MaxValue": "128", "ScalingType": "Linear"}]
    assert ranges["CategoricalParameterRanges"] == [
        {"Name": "hidden_sizes", "Values": ["[32]", "[64, 32]", "[128, 64]", "[64, 64, 32]"]}]
    definition = request["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["epochs"] == "40"
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == spec.METRIC_DEFINITIONS
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert "CheckpointConfig" not in definition
    assert definition["RoleArn"] == spec.ROLE_PLACEHOLDER


def test_dry_run_hyperband_grid_and_no_early_stopping(capsys):
    code, out, err = _dry(["--search", "hyperband", "--hp", "epochs=60", "--range", "learning_rate=0.001:0.1:log"], capsys)
    assert code == 0, err
    config = dry_run_summary(err)["HyperParameterTuningJobConfig"]
    # Hyperband stops trials itself: SageMaker requires early stopping Off with it.
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    assert config["StrategyConfig"] == {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 60}}

    code, out, err = _dry(["--search", "grid", "--range", "optimizer=adam|adamw", "--range", "hidden_sizes=[32]|[64, 32]|[8]"],
                          capsys)
    assert code == 0, err
    request = dry_run_summary(err)
    assert request["HyperParameterTuningJobConfig"]["ResourceLimits"] == {"MaxParallelTrainingJobs": 1}
    assert request["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Auto"
    assert request["training_jobs"] == 6

    code, out, err = _dry(["--search", "random", "--no-early-stopping", "--range", "dropout=0:0.3"], capsys)
    assert code == 0, err
    assert dry_run_summary(err)["HyperParameterTuningJobConfig"]["TrainingJobEarlyStoppingType"] == "Off"


# --- against moto's SageMaker --------------------------------------------------------------------


@pytest.fixture
def data_dir(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    return out


CASES = {
    "bayesian-default-space": ["--objective", "val_acc", "--max-jobs", "7", "--max-parallel-jobs", "3", "--hp", "epochs=30",
                               "--spot", "--instance-count", "2"],
    "hyperband": ["--search", "hyperband", "--hp", "epochs=25", "--range", "learning_rate=0.0001:0.1:log",
                  "--range", "batch_size=8:64:log", "--max-jobs", "5"],
    "grid": ["--search", "grid", "--objective", "val_auroc", "--range", "optimizer=adam|adamw",
             "--range", "hidden_sizes=[64, 32]|[32]", "--hp", "learning_rate=0.003"],
    "random-no-early-stopping": ["--search", "random", "--no-early-stopping", "--range", "dropout=0.0:0.4",
                                 "--range", "patience=3:30", "--gpu"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_the_tuning_job_moto_receives_is_the_dry_run(case, fresh_aws, bucket, data_dir, recording, capsys, tmp_path):
    argv = ["--bucket", BUCKET, "--role", ROLE, "--data", str(data_dir), *CASES[case]]
    code, out, err = _dry(argv, capsys)
    assert code == 0, err
    planned = dry_run_summary(err)

    rec = recording.start()
    code, out, err = invoke(_main, [*argv, "--no-wait", "--out", str(tmp_path / "t"), "--runs-dir", str(tmp_path / "r")],
                            capsys)
    entries = rec.stop()
    assert code == 0, err
    submitted = json.loads(out.strip().splitlines()[-1])
    name = submitted["tuning_job"]
    assert submitted["status"] == "Submitted" and name.startswith("titanic-tune-") and len(name) <= 32

    d = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = d["HyperParameterTuningJobConfig"]
    assert config == planned["HyperParameterTuningJobConfig"]  # the SDK sent what --dry-run showed
    definition = d["TrainingJobDefinition"]
    want = planned["TrainingJobDefinition"]
    static = definition["StaticHyperParameters"]
    assert static == want["StaticHyperParameters"]
    assert static["sagemaker_submit_directory"] == "/opt/ml/input/data/code"  # the code channel's folder
    tuned = {r["Name"] for kind in config["ParameterRanges"].values() for r in kind}
    assert not tuned & set(static)  # no tuned flag is also fixed
    for key in ("AlgorithmSpecification", "RoleArn", "ResourceConfig", "StoppingCondition", "EnableManagedSpotTraining",
                "Environment"):
        assert definition.get(key) == want.get(key), key
    # The channels as the dry run shows them, the code channel under the tuning's own name.
    planned_channels = json.loads(json.dumps(want["InputDataConfig"]).replace(tuner.TUNING_JOB_PLACEHOLDER, name))
    assert definition["InputDataConfig"] == planned_channels
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]}
    assert {k: channels[k] for k in ("train", "val", "test")} == {
        s: f"s3://{BUCKET}/titanic-lightning/data/{s}/" for s in ("train", "val", "test")}
    assert channels["code"].startswith(f"s3://{BUCKET}/titanic-lightning/titanic-lightning-")
    assert channels["code"].endswith(f"/{name}/input/code")
    assert "CheckpointConfig" not in definition
    (request,) = Recording.sagemaker_calls(entries, "CreateHyperParameterTuningJob")
    assert {"Key": "project", "Value": "titanic-lightning"} in request["Tags"]

    # The case's own rules, read back.
    if case == "bayesian-default-space":
        assert config["Strategy"] == "Bayesian" and config["TrainingJobEarlyStoppingType"] == "Auto"
        assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_acc"}
        assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 7, "MaxParallelTrainingJobs": 3}
        assert tuned == {"learning_rate", "batch_size", "dropout", "weight_decay", "hidden_sizes"}
        assert definition["EnableManagedSpotTraining"] is True and definition["ResourceConfig"]["InstanceCount"] == 2
        assert definition["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
    elif case == "hyperband":
        assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
        assert config["StrategyConfig"]["HyperbandStrategyConfig"] == {"MinResource": 1, "MaxResource": 25}
        assert config["ParameterRanges"]["IntegerParameterRanges"] == [
            {"Name": "batch_size", "MinValue": "8", "MaxValue": "64", "ScalingType": "Logarithmic"}]
        assert config["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "val_loss"}
    elif case == "grid":
        assert config["Strategy"] == "Grid" and "MaxNumberOfTrainingJobs" not in config["ResourceLimits"]
        assert set(config["ParameterRanges"]) == {"CategoricalParameterRanges"}
        assert config["ParameterRanges"]["CategoricalParameterRanges"] == [
            {"Name": "optimizer", "Values": ["adam", "adamw"]}, {"Name": "hidden_sizes", "Values": ["[64, 32]", "[32]"]}]
        assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_auroc"}
        assert static["learning_rate"] == "0.003"
    else:
        assert config["Strategy"] == "Random" and config["TrainingJobEarlyStoppingType"] == "Off"
        assert definition["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
        assert config["ParameterRanges"]["IntegerParameterRanges"] == [
            {"Name": "patience", "MinValue": "3", "MaxValue": "30", "ScalingType": "Linear"}]


def test_waiting_collects_every_training_job_of_the_tuning(tmp_path):
    """moto completes a tuning job at once and lists none of its training jobs, so the wait and the
    collection are driven by botocore's Stubber, whose requests and answers the service model checks."""
    from botocore.stub import Stubber

    from launch.jobs.prices import load as load_prices

    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    plan = build_plan(["learning_rate=0.001:0.1:log"], {}, objective="val_acc")
    name, at = "titanic-tune-261128-101500", datetime(2026, 11, 28, tzinfo=timezone.utc)
    jobs = [("j-1", "Completed", "0.01", {"val_loss": 0.45, "val_acc": 0.80}),
            ("j-2", "Stopped", "0.002", {"val_loss": 0.60, "val_acc": 0.70}),
            ("j-3", "Completed", "0.05", {"val_loss": 0.43, "val_acc": 0.83}),
            ("j-4", "Failed", "0.09", {})]
    stub = Stubber(client)
    base = {"HyperParameterTuningJobName": name, "HyperParameterTuningJobArn": f"arn:aws:sagemaker:{REGION}:1:x/{name}",
            "HyperParameterTuningJobConfig": tuner.tuning_config(plan), "CreationTime": at,
            "TrainingJobStatusCounters": {"Completed": 2}, "ObjectiveStatusCounters": {}}
    stub.add_response("describe_hyper_parameter_tuning_job", {**base, "HyperParameterTuningJobStatus": "InProgress"},
                      {"HyperParameterTuningJobName": name})
    stub.add_response("describe_hyper_parameter_tuning_job", {**base, "HyperParameterTuningJobStatus": "Completed"},
                      {"HyperParameterTuningJobName": name})
    summaries = [{"TrainingJobName": n, "TrainingJobArn": f"arn:{n}", "CreationTime": at.replace(minute=i),
                  "TrainingJobStatus": s, "TunedHyperParameters": {"learning_rate": lr}}
                 for i, (n, s, lr, _) in enumerate(jobs)]
    stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                      {"TrainingJobSummaries": summaries[:2], "NextToken": "t"}, {"HyperParameterTuningJobName": name})
    stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": summaries[2:]},
                      {"HyperParameterTuningJobName": name, "NextToken": "t"})
    for n, s, _, metrics in jobs:
        stub.add_response("describe_training_job", {
            "TrainingJobName": n, "TrainingJobArn": f"arn:{n}", "TrainingJobStatus": s, "SecondaryStatus": "Completed",
            "CreationTime": at, "TrainingStartTime": at, "TrainingEndTime": at.replace(minute=5),
            "AlgorithmSpecification": {"TrainingInputMode": "File"},
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://b/output/{n}/output/model.tar.gz"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "TrainingTimeInSeconds": 100, "BillableTimeInSeconds": 100,
            "FinalMetricDataList": [{"MetricName": k, "Value": v, "Timestamp": at} for k, v in metrics.items()],
        }, {"TrainingJobName": n})
    with stub:
        described = tuner.wait(client, name, poll_s=0)
        rows = tuner.collect(client, described, load_prices(None), tmp_path / "t", tmp_path / "runs", 1.0)
    stub.assert_no_pending_responses()
    assert [r["status"] for r in rows] == ["Completed", "Pruned", "Completed", "Failed"]
    result = tuning_result.summary(name, "sagemaker", plan, rows, 300.0, tmp_path / "t" / name, stopped=False)
    assert result["best"]["training_job"] == "j-3" and result["best"]["val_acc"] == 0.83  # val_acc is maximised
    assert result["best"]["model_artifact"] == "s3://b/output/j-3/output/model.tar.gz"
    record = json.loads((tmp_path / "runs" / "j-2.json").read_text())
    assert record["tuning_job"] == name and record["trial"] == 1 and record["hyperparameters"] == {"learning_rate": "0.002"}
    assert record["status"] == "Pruned" and record["instance_type"] == "ml.m5.large" and record["estimated_cost_usd"] > 0


# --- here, with Optuna ---------------------------------------------------------------------------


SMOOTH_SPACE = ["learning_rate=0.0001:0.1:log", "dropout=0.0:0.5"]


def _smooth(params) -> float:
    """A deterministic stand-in for a trial's val_loss: least at learning_rate 0.003, dropout 0.1."""
    return (math.log10(params["learning_rate"]) + 2.5) ** 2 + 4 * (params["dropout"] - 0.1) ** 2


def _local_plan(seed: int = 1, trials: int | None = None, parallel: int = 1, prune_after_trials: int = 5):
    from launch.tuning.local import local_plan

    return local_plan(SMOOTH_SPACE, {}, search="bayesian", objective="val_loss", trials=trials, parallel=parallel,
                      early_stopping=True, seed=seed, prune_after_trials=prune_after_trials)


def _search(study, plan, parallel: int = 1) -> list[list[dict]]:
    """The trials as `launch.tuning.trials.search` asks and tells them, `parallel` asked before any is
    told: the proposals, in rounds."""
    from launch.tuning.trials import distributions

    space = distributions(plan.ranges)
    rounds, asked = [], 0
    while asked < plan.max_jobs:
        batch = [study.ask(space) for _ in range(min(parallel, plan.max_jobs - asked))]
        for trial in batch:
            study.tell(trial, _smooth(trial.params))
        rounds.append([t.params for t in batch])
        asked += len(batch)
    return rounds


def test_tpe_starts_from_a_third_of_the_trials_at_random():
    from launch.tuning.space import tpe_startup_trials

    assert {n: tpe_startup_trials(n) for n in (1, 2, 3, 5, 9, 10, 20, 30, 100)} == {
        1: 2, 2: 2, 3: 2, 5: 2, 9: 3, 10: 3, 20: 6, 30: 10, 100: 10}


@pytest.mark.slow
def test_the_local_bayesian_search_chooses_from_its_results_after_the_random_start():
    """`--trials 10`: after the random start, TPE's proposals score better than a random search's
    with the same seed (on a smooth objective, over 20 seeds). Were TPE still starting at random
    (Optuna's default, 10 trials), the two searches would be the same."""
    import optuna

    from launch.tuning import trials

    later = slice(5, 10)  # past the start-up trials
    tpe, rand = [], []
    for seed in range(1, 21):
        plan = _local_plan(seed)
        assert plan.max_jobs == 10
        for scores, study in ((tpe, trials.study_for(plan)),
                              (rand, optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)))):
            proposals = [p for batch in _search(study, plan) for p in batch]
            scores.append(statistics.mean(_smooth(p) for p in proposals[later]))
    assert statistics.mean(tpe) < 0.85 * statistics.mean(rand), (statistics.mean(tpe), statistics.mean(rand))
    assert sum(t < r for t, r in zip(tpe, rand)) >= 13, list(zip(tpe, rand))
    for count in (1, 2, 3):  # budgets below and at the start-up size run as well
        assert len(_search(trials.study_for(_local_plan(trials=count)), _local_plan(trials=count))) == count


def test_trials_side_by_side_spread_out():
    """`--parallel 2`: the second of two trials asked together keeps away from the first, still
    running (Optuna's constant liar), where without the liar TPE would propose both near the same point."""
    import optuna

    from launch.tuning import trials
    from launch.tuning.space import tpe_startup_trials

    def gaps(study, plan):
        out = []
        for batch in _search(study, plan, parallel=2)[tpe_startup_trials(plan.max_jobs) // 2 + 1:]:
            first, second = ([(math.log10(p["learning_rate"]) + 4) / 3, p["dropout"] / 0.5] for p in batch)
            out.append(max(abs(a - b) for a, b in zip(first, second)))
        return out

    ours, without = [], []
    for seed in range(1, 21):
        plan = _local_plan(seed, parallel=2)
        ours += gaps(trials.study_for(plan), plan)
        without += gaps(optuna.create_study(sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=tpe_startup_trials(plan.max_jobs), constant_liar=False)), plan)
    assert statistics.mean(ours) > 1.5 * statistics.mean(without), (statistics.mean(ours), statistics.mean(without))


@pytest.mark.parametrize("prune_after_trials", [1, 3])
def test_the_median_pruner_stops_no_trial_before_its_warm_up_epochs(prune_after_trials):
    """A trial far behind the finished ones from its first epoch is stopped at epoch
    PRUNE_WARMUP_EPOCHS, not before; and only once `prune_after_trials` trials have finished."""
    from launch.tuning import trials

    plan = _local_plan(prune_after_trials=prune_after_trials)
    study = trials.study_for(plan)
    space = trials.distributions(plan.ranges)
    for _ in range(prune_after_trials):
        done = study.ask(space)
        for epoch in range(1, 11):
            done.report(0.5, epoch)
            assert not done.should_prune()  # before `prune_after_trials` trials have finished
        study.tell(done, 0.5)
    behind = study.ask(space)
    pruned_at = None
    for epoch in range(1, 11):
        behind.report(5.0, epoch)
        if behind.should_prune():
            pruned_at = epoch
            break
    assert pruned_at == PRUNE_WARMUP_EPOCHS == 5


def _tune(args, cwd, timeout=120):
    return subprocess.run([sys.executable, str(TUNE), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def _partials(root):
    return [p for p in root.rglob("*") if p.name.endswith(".partial")]


@pytest.mark.slow
def test_a_small_local_search(data_dir, titanic_csv, tmp_path):
    args = ["--local", "--trials", "3", "--parallel", "2", "--data", str(data_dir), "--hp", "epochs=2",
            "--hp", "early_stopping=false", "--range", "learning_rate=0.001:0.1:log", "--range", "hidden_sizes=[16]|[32, 16]",
            "--no-early-stopping"]
    started = time.monotonic()
    proc = _tune(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert lines[0].split()[:5] == ["trial", "status", "val_loss", "val_acc", "wall"]
    assert result["status"] == "Completed" and result["mode"] == "local"
    assert result["objective"] == {"metric": "val_loss", "type": "Minimize"}
    trials = result["trials"]
    assert [t["trial"] for t in trials] == [0, 1, 2] and {t["status"] for t in trials} == {"Completed"}
    for t in trials:
        assert set(t["hyperparameters"]) == {"learning_rate", "hidden_sizes"}
        assert 0.001 <= float(t["hyperparameters"]["learning_rate"]) <= 0.1
        assert t["hyperparameters"]["hidden_sizes"] in ("[16]", "[32, 16]")
        assert 0 < t["val_loss"] and 0 <= t["val_acc"] <= 1 and t["wall_seconds"] > 0
    best = min(trials, key=lambda t: t["val_loss"])
    assert result["best"]["trial"] == best["trial"] and result["best"]["val_loss"] == best["val_loss"]
    # The table lists the trials best first.
    ranked = [t["trial"] for t in sorted(trials, key=lambda t: t["val_loss"])]
    assert [int(row.split()[0].rstrip("*")) for row in lines[2:5]] == ranked
    assert result["wall_seconds"] <= time.monotonic() - started

    folder = tmp_path / result["folder"]
    assert json.loads((folder / "tuning.json").read_text()) == result
    assert (folder / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = tmp_path / result["best"]["model_artifact"]
    assert (model / "model.pt").is_file()
    for t in trials:  # only the best trial's model is kept; the trials' logs stay
        assert (folder / "trials" / str(t["trial"]) / "model").exists() == (t["trial"] == best["trial"])
        assert "epoch=2;" in (folder / "trials" / str(t["trial"]) / "train.log").read_text()
    records = sorted((tmp_path / "runs").glob("*.json"))
    assert len(records) == 3
    for path in records:
        record = json.loads(path.read_text())
        assert record["tuning_job"] == result["tuning_job"] and record["status"] == "Completed"
        assert record["hyperparameters"] == trials[record["trial"]]["hyperparameters"]
        assert record["val_acc"] == trials[record["trial"]]["val_acc"] and record["test_acc"] is not None
        assert (record["model_artifact"] is not None) == (record["trial"] == best["trial"])
    assert not _partials(tmp_path)

    # --compare reads the tuning result and the trials' records alike, with every column a trial has.
    from launch.records import compare

    for rows in (compare.load_runs([str(folder / "tuning.json")]), compare.load_runs(sorted(map(str, records)))):
        assert [r["mode"] for r in rows] == ["tuning"] * 3 and [r["instance_type"] for r in rows] == ["local"] * 3
        for row in rows:
            trial = trials[row["trial"]]
            assert row["val_acc"] == trial["val_acc"] and row["test_acc"] == trial["test_acc"] is not None
            assert row["wall_seconds"] == trial["wall_seconds"]
    table = compare.compare_table(compare.load_runs([str(folder / "tuning.json")]))
    assert f"{result['tuning_job']}/trial-0" in table and f"{trials[0]['test_acc']:.4f}" in table

    scored = run_entry("predict", "--model", str(model), "--csv", str(titanic_csv), "--out", str(tmp_path / "p.csv"),
                       cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 892


@pytest.mark.slow
def test_a_trial_falling_behind_is_pruned(data_dir, tmp_path):
    # A grid runs in the order given: learning rate 0.05 first, then 1e-6, whose val_loss is far
    # above the first trial's from its first epoch on: the median pruner stops it as soon as it
    # may, at the end of its warm-up (epoch 5), not before.
    args = ["--local", "--search", "grid", "--range", "learning_rate=0.05|0.000001", "--prune-after-trials", "1",
            "--data", str(data_dir), "--hp", "epochs=7", "--hp", "early_stopping=false"]
    proc = _tune(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    first, second = result["trials"]
    assert first["hyperparameters"] == {"learning_rate": "0.05"} and first["status"] == "Completed"
    assert second["hyperparameters"] == {"learning_rate": "0.000001"} and second["status"] == "Pruned"
    assert second["val_loss"] > first["val_loss"]
    log = (tmp_path / result["folder"] / "trials" / "1" / "train.log").read_text()
    assert f"[tune] pruned after epoch {PRUNE_WARMUP_EPOCHS}" in log and "epoch=7;" not in log
    record = json.loads((tmp_path / "runs" / f"{result['tuning_job']}-001.json").read_text())
    assert record["status"] == "Pruned" and record["model_artifact"] is None
    assert result["best"]["trial"] == 0


@pytest.mark.slow
def test_ctrl_c_stops_the_running_trials_and_leaves_a_whole_summary(data_dir, tmp_path):
    proc = subprocess.Popen([sys.executable, str(TUNE), "--local", "--trials", "4", "--parallel", "2", "--data", str(data_dir),
                             "--hp", "epochs=400", "--hp", "early_stopping=false", "--range", "dropout=0.0:0.3"],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    logs = []
    while time.monotonic() < deadline:
        logs = list(tmp_path.glob("tuning/*/trials/*/train.log"))
        if len(logs) == 2 and all("epoch=1;" in p.read_text() for p in logs):
            break
        time.sleep(0.2)
    assert len(logs) == 2, "the trials did not start"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "Stopped" and result["best"] is None
    assert [t["status"] for t in result["trials"]] == ["Stopped", "Stopped"]
    folder = tmp_path / result["folder"]
    assert json.loads((folder / "tuning.json").read_text()) == result
    assert not _partials(tmp_path)
    for path in logs:  # the trials ended by the signal, not killed: the entry said so
        assert "stopped by SIGTERM" in path.read_text()
    assert not list(folder.glob("trials/*/model/model.pt"))


def _s3_urls(value, where=""):
    """(where, url) for every string holding an S3 URL anywhere in `value` (a request or a description)."""
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _s3_urls(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _s3_urls(item, f"{where}[{i}]")]
    return [(where, value)] if isinstance(value, str) and "s3://" in value else []


def test_a_network_isolated_tuning_job_gives_its_trials_everything_as_channels(fresh_aws, bucket, data_dir, capsys,
                                                                                tmp_path, cached_wheelhouse):
    """A trial with no network cannot download anything: its code, data and wheels must come as channels,
    which SageMaker itself fills, and no hyperparameter or variable may name an S3 URL for it to fetch."""
    key, wheel = cached_wheelhouse
    argv = ["--bucket", BUCKET, "--role", ROLE, "--data", str(data_dir), "--network-isolation", "--max-jobs", "2",
            "--no-wait", "--out", str(tmp_path / "t"), "--runs-dir", str(tmp_path / "r")]
    code, out, err = _dry(argv[:-5], capsys)
    assert code == 0, err
    assert dry_run_summary(err)["TrainingJobDefinition"]["EnableNetworkIsolation"] is True
    code, out, err = invoke(_main, argv, capsys)
    assert code == 0, err
    name = json.loads(out.strip().splitlines()[-1])["tuning_job"]
    definition = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)["TrainingJobDefinition"]
    assert definition["EnableNetworkIsolation"] is True

    # The S3 URLs of the definition are the channels' and the output path, which SageMaker moves.
    channel_urls = {f".InputDataConfig[{i}].DataSource.S3DataSource.S3Uri" for i in range(len(definition["InputDataConfig"]))}
    fetched_by_the_container = [(where, url) for where, url in _s3_urls(definition)
                                if where not in channel_urls | {".OutputDataConfig.S3OutputPath"}]
    assert fetched_by_the_container == []

    # The image's toolkit takes the code from the folder sagemaker_submit_directory names: a channel's.
    static = definition["StaticHyperParameters"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]}
    channel = static["sagemaker_submit_directory"].removeprefix("/opt/ml/input/data/")
    assert static["sagemaker_submit_directory"] == f"/opt/ml/input/data/{channel}" and channel in channels
    s3 = boto3.client("s3", region_name=REGION)
    code_key = channels[channel].removeprefix(f"s3://{BUCKET}/")
    shipped = {o["Key"].removeprefix(code_key + "/") for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=code_key + "/")["Contents"]}
    assert {static["sagemaker_program"], "requirements.txt", "titanic_lightning/environment.py"} <= shipped

    # The toolkit installs requirements.txt in /opt/ml/code, away from the channels: it names the
    # wheels channel by its absolute path too, and no index.
    wheels_uri = f"s3://{BUCKET}/titanic-lightning/wheels/{key}/"
    assert channels["wheels"] == wheels_uri
    assert s3.get_object(Bucket=BUCKET, Key=f"titanic-lightning/wheels/{key}/{wheel.name}")["Body"].read() == \
        wheel.read_bytes()
    requirements = s3.get_object(Bucket=BUCKET, Key=f"{code_key}/requirements.txt")["Body"].read().decode().splitlines()
    assert requirements[:3] == ["--no-index", "--find-links ../wheels", "--find-links /opt/ml/input/data/wheels"]


def _written_keys(entries: list[dict]) -> list[tuple[str, str]]:
    """(bucket, key) of every S3 object moto was asked to write while recording."""
    from urllib.parse import unquote, urlsplit

    written = []
    for entry in entries:
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        # An S3 request signs for the service s3; SageMaker, IAM and STS requests share the endpoint.
        if entry["method"] not in ("PUT", "POST") or "/s3/aws4_request" not in headers.get("authorization", ""):
            continue
        url = urlsplit(entry["url"])
        if url.query and "uploadId" not in url.query and "uploads" not in url.query:
            continue  # a bucket or object sub-resource (tagging, acl), not an object's content
        path = unquote(url.path).lstrip("/")
        host_bucket = url.hostname.split(".")[0] if url.hostname and url.hostname[0].isalpha() else None
        bucket_name, _, key = (f"{host_bucket}/{path}" if host_bucket else path).partition("/")
        written.append((bucket_name, key))
    return written


# A prefix given with a trailing slash, and one with every character --prefix lets through that an
# S3 key may need escaping for.
PREFIXES = {"trailing-slash": ("team/titanic/", "team/titanic"),
            "odd-characters": ("a.b/c_d-e/f+g=h,(1)!*$@;:&", "a.b/c_d-e/f+g=h,(1)!*$@;:&")}


@pytest.mark.slow
@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("command", ["tune", "tune --network-isolation", "submit", "submit --network-isolation"])
def test_everything_a_tuning_or_a_training_job_uploads_is_under_the_prefix(command, prefix, fresh_aws, bucket, data_dir,
                                                                           recording, capsys, tmp_path,
                                                                           cached_wheelhouse):
    """A role allowed only `s3://B/<prefix>/*` can submit: every object written goes under the prefix,
    and every S3 URL the request gives SageMaker (channels, output, checkpoints, TensorBoard) too."""
    from launch.submit import _main as submit_main

    given, cleaned = PREFIXES[prefix]
    name, *flags = command.split()
    argv = ["--bucket", BUCKET, "--role", ROLE, "--data", str(data_dir), "--prefix", given, *flags, "--no-wait",
            "--runs-dir", str(tmp_path / "r")]
    main, argv, target = ((_main, [*argv, "--max-jobs", "2", "--out", str(tmp_path / "t")], "CreateHyperParameterTuningJob")
                          if name == "tune" else (submit_main, argv, "CreateTrainingJob"))
    rec = recording.start()
    code, out, err = invoke(main, argv, capsys)
    entries = rec.stop()
    assert code == 0, err

    written = _written_keys(entries)
    assert {b for b, _ in written} == {BUCKET}
    keys = sorted(k for _, k in written)
    assert any(k.endswith("/entry/train.py") for k in keys) and any(k.endswith("/train_data.npz") for k in keys)
    assert [k for k in keys if not k.startswith(cleaned + "/")] == []
    # What the bucket holds afterwards, listed: the same.
    listed = [o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(listed) == sorted(set(keys))

    (request,) = Recording.sagemaker_calls(entries, target)
    urls = _s3_urls(request)
    assert urls and [(where, url) for where, url in urls if not url.startswith(f"s3://{BUCKET}/{cleaned}/")] == []


# --- what a tuning reports: the table and tuning.png ---------------------------------------------

def _reported(ranges: list[str], values: list[dict[str, str]]) -> tuple[dict, object]:
    plan = build_plan(ranges, {})
    trials = [{"trial": n, "hyperparameters": hp, "status": "Completed", "val_loss": 0.45 + 0.01 * n, "val_acc": 0.8,
               "wall_seconds": 10.0 + n} for n, hp in enumerate(values)]
    return tuning_result.summary("titanic-tune-x", "local", plan, trials, 30.0, tuning_result.Path("t"), False), plan


def test_the_table_shows_tuned_values_to_4_significant_digits_and_the_summary_keeps_them_whole():
    hp = {"learning_rate": "0.0012345678901234567", "batch_size": "87", "dropout": "0.23456789012345678",
          "weight_decay": "1.2345678901234567e-05", "hidden_sizes": "[64, 32]"}
    result, plan = _reported([], [hp])
    row = tuning_result.table(result, plan).splitlines()[2].split()
    assert row[-6:] == ["0.001235", "87", "0.2346", "1.235e-05", "[64,", "32]"]
    assert result["trials"][0]["hyperparameters"] == hp  # tuning.json and the last line keep every digit


@pytest.mark.parametrize(("ranges", "trials"), [
    ([], 12),                                                      # the default space: several decades
    (["learning_rate=0.001:0.003:log"], 12),                       # under a decade: matplotlib labels minor ticks
    (["learning_rate=0.0012:0.0013:log"], 2),                      # a sliver of a decade
    (["weight_decay=0.00000001:1:log", "learning_rate=0.0009:0.0011:log"], 12),
])
def test_tuning_png_log_axes_have_tick_labels_that_do_not_overlap(ranges, trials):
    import itertools
    import random

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    plan = build_plan(ranges, {})
    rng = random.Random(0)
    values = []
    for _ in range(trials):
        hp = {}
        for r in plan.ranges:
            if r.log:
                hp[r.name] = repr(math.exp(rng.uniform(math.log(r.low), math.log(r.high))))
            else:
                hp[r.name] = str(r.values[0]) if r.values else str(r.low)
        values.append(hp)
    result, plan = _reported(ranges, values)
    fig = tuning_result.figure(result, plan)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    log_axes = [ax for ax in fig.axes if ax.get_xscale() == "log"]
    assert len(log_axes) == sum(r.log for r in plan.ranges) > 0
    for ax in log_axes:
        low, high = sorted(ax.get_xlim())
        labels = [tick.label1 for tick in [*ax.xaxis.get_major_ticks(), *ax.xaxis.get_minor_ticks()]
                  if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high]
        assert 2 <= len(labels) <= tuning_result.MAX_LOG_TICKS, [t.get_text() for t in labels]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels]
        overlapping = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
        assert not overlapping, (ax.get_xlabel(), overlapping)


def _marked(mark: str) -> list:
    from launch.jobs import descendants

    return descendants.marked([mark])[mark]


def _gone(mark: str, within_s: float = 20) -> bool:
    deadline = time.monotonic() + within_s
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _marked(mark)


def _trial_pids(folder, numbers, mark: str) -> dict[int, int]:
    """The pid of each numbered trial of the search carrying `mark`, found by its working folder."""
    pids = {}
    for p in _marked(mark):
        try:
            cwd = os.readlink(f"/proc/{p.pid}/cwd")
        except OSError:
            continue
        for n in numbers:
            if cwd.endswith(f"/trials/{n}"):
                pids[n] = p.pid
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the trials' processes in /proc")
def test_a_killed_or_signalled_trial_fails_alone_and_the_search_goes_on(data_dir, tmp_path):
    from launch.jobs.descendants import MARK_VARIABLE

    mark = f"search-{os.getpid()}-{time.monotonic_ns()}"
    # A grid in the order given: trials 0 and 1 train long enough to be ended by hand; 2 and 3 are short.
    proc = subprocess.Popen([sys.executable, str(TUNE), "--local", "--search", "grid", "--range", "epochs=400|401|3|4",
                             "--parallel", "2", "--data", str(data_dir), "--hp", "early_stopping=false"],
                            cwd=tmp_path, env=clean_env(**{MARK_VARIABLE: mark}), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline, pids = time.monotonic() + 90, {}
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(tmp_path.glob("tuning/*/trials/[01]/train.log"))
        if len(logs) == 2 and all("epoch=1;" in p.read_text() for p in logs):
            pids = _trial_pids(logs[0].parents[1], (0, 1), mark)
            break
        time.sleep(0.2)
    assert set(pids) == {0, 1}, "the two long trials did not start"
    os.kill(pids[0], signal.SIGKILL)  # as the kernel's OOM killer would
    os.kill(pids[1], signal.SIGTERM)  # stopped from outside the search
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "Completed"
    assert [t["status"] for t in result["trials"]] == ["Failed", "Failed", "Completed", "Completed"]
    assert result["best"]["trial"] in (2, 3)
    records = {json.loads(p.read_text())["trial"]: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert "exit code -9" in records[0]["failure_reason"]
    assert "stopped by SIGTERM" in records[1]["failure_reason"]
    assert not _partials(tmp_path)
    assert _gone(mark), f"processes left behind: {_marked(mark)}"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the trials' parent-death signal is Linux's")
def test_a_killed_search_leaves_no_trial_running(data_dir, tmp_path):
    from launch.jobs.descendants import MARK_VARIABLE

    mark = f"search-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, str(TUNE), "--local", "--trials", "4", "--parallel", "2", "--data",
                             str(data_dir), "--hp", "epochs=400", "--hp", "early_stopping=false"],
                            cwd=tmp_path, env=clean_env(**{MARK_VARIABLE: mark}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        logs = list(tmp_path.glob("tuning/*/trials/*/train.log"))
        if len(logs) == 2 and all("epoch=1;" in p.read_text() for p in logs):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the trials did not start")
    assert len(_trial_pids(logs[0].parents[1], (0, 1), mark)) == 2
    proc.kill()
    proc.wait(timeout=10)
    assert _gone(mark), f"processes left behind: {_marked(mark)}"

"""`submit.py --dry-run` and `tune.py --dry-run` print the request the SDK would send: valid for
botocore's service model (its ParamValidator, and every pattern, length and range it declares,
which ParamValidator leaves unchecked), and what moto receives for the same command."""

from __future__ import annotations

import json
import re

import botocore.session
import pytest
from botocore.validate import ParamValidator

from launch.jobs import request
from launch.submit import _main as submit_main
from launch.tune import _main as tune_main
from tests.helpers import BUCKET, ROLE, Recording, dry_run_summary, invoke

SERVICE = botocore.session.get_session().get_service_model("sagemaker")
# The model's patterns are Java regexes; Python's `re` lacks their Unicode classes. Each appears
# inside a character class: letters and numbers are `\w` (with `_`, which those classes allow
# anyway), separators `\s` (a little wider: tabs and newlines too).
_JAVA_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\w", r"\p{Z}": r"\s", r"\p{Alnum}": "A-Za-z0-9"}


def _python_pattern(pattern: str) -> str:
    for java, python in _JAVA_CLASSES.items():
        pattern = pattern.replace(java, python)
    return pattern


def _check_constraints(value, shape, where: str, problems: list[str]) -> None:
    """Every `pattern` (full match), `min`/`max` the shape declares, walked through the value."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        for key, member in value.items():
            _check_constraints(member, shape.members[key], f"{where}.{key}", problems)
    elif kind == "list":
        for i, item in enumerate(value):
            _check_constraints(item, shape.member, f"{where}[{i}]", problems)
    elif kind == "map":
        for key, item in value.items():
            _check_constraints(key, shape.key, f"{where} key {key!r}", problems)
            _check_constraints(item, shape.value, f"{where}[{key!r}]", problems)
    if kind in ("string", "list", "map") and not isinstance(value, bool):
        size = len(value)
        if "min" in meta and size < meta["min"]:
            problems.append(f"{where}: length {size} below {meta['min']}")
        if "max" in meta and size > meta["max"]:
            problems.append(f"{where}: length {size} above {meta['max']}")
    if kind == "string" and "pattern" in meta and not re.fullmatch(_python_pattern(meta["pattern"]), value, re.S):
        problems.append(f"{where}: {value!r} does not match {meta['pattern']}")
    if kind in ("integer", "long", "float", "double"):
        if "min" in meta and value < meta["min"]:
            problems.append(f"{where}: {value} below {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{where}: {value} above {meta['max']}")


def _valid(params: dict, operation: str) -> None:
    shape = SERVICE.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()
    problems: list[str] = []
    _check_constraints(params, shape, operation, problems)
    assert not problems, "\n".join(problems)


def _dry(main, argv, capsys, monkeypatch) -> tuple[dict, dict]:
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    code, out, err = invoke(main, ["--dry-run", *argv], capsys)
    assert code == 0, err
    return json.loads(out), dry_run_summary(err)


TRAINING = {
    "cpu": [],
    "gpu": ["--gpu"],
    "two-instances": ["--instance-count", "2", "--hp", "epochs=40"],
    "spot": ["--spot", "--max-run", "1800"],
    "isolation": ["--network-isolation"],
    "resume": ["--resume", "titanic-lightning-m5-large-x1-spot-20250102030405"],
}


@pytest.mark.parametrize("case", TRAINING)
def test_the_training_dry_run_is_a_valid_create_training_job_request(case, capsys, monkeypatch):
    created, summary = _dry(submit_main, TRAINING[case], capsys, monkeypatch)
    _valid(created, "CreateTrainingJob")
    assert created["RoleArn"] == request.PLACEHOLDER_ROLE and request.PLACEHOLDER_ACCOUNT in created["RoleArn"]
    bucket = request.placeholder_bucket("us-east-1")
    for channel in created["InputDataConfig"]:
        assert channel["DataSource"]["S3DataSource"]["S3Uri"].startswith(f"s3://{bucket}/titanic-lightning/")
    resources = created["ResourceConfig"]
    assert resources["InstanceType"] == summary["instance_type"]
    assert resources["InstanceCount"] == summary["instance_count"]
    assert created["AlgorithmSpecification"]["TrainingImage"] == summary["image_uri"]
    assert created["StoppingCondition"] == summary["stopping_condition"]
    assert created.get("EnableManagedSpotTraining", False) is summary["spot"]
    assert created.get("EnableNetworkIsolation", False) is summary["network_isolation"]
    assert {c["ChannelName"] for c in created["InputDataConfig"]} == {*summary["channels"], "code", "sm_drivers"}
    if case == "resume":
        assert created["CheckpointConfig"]["S3Uri"] == summary["checkpoint_s3_uri"].replace(
            "<session-default-bucket>", bucket)
    else:
        assert created["CheckpointConfig"]["S3Uri"].endswith(f"/{created['TrainingJobName']}/checkpoints")


TUNING = {
    "bayesian": ["--instance-count", "2", "--spot", "--max-jobs", "6", "--max-parallel-jobs", "2"],
    "random": ["--search", "random", "--no-early-stopping", "--range", "dropout=0.0:0.4", "--gpu"],
    "grid": ["--search", "grid", "--range", "optimizer=adam|adamw", "--range", "hidden_sizes=[64, 32]|[32]"],
    "hyperband": ["--search", "hyperband", "--hp", "epochs=25", "--range", "batch_size=8:64:log",
                  "--network-isolation"],
}


@pytest.mark.parametrize("case", TUNING)
def test_the_tuning_dry_run_is_a_valid_create_tuning_job_request(case, capsys, monkeypatch):
    created, summary = _dry(tune_main, TUNING[case], capsys, monkeypatch)
    _valid(created, "CreateHyperParameterTuningJob")
    assert created["HyperParameterTuningJobConfig"] == summary["HyperParameterTuningJobConfig"]
    definition, planned = created["TrainingJobDefinition"], summary["TrainingJobDefinition"]
    for key in ("StaticHyperParameters", "RoleArn", "ResourceConfig", "StoppingCondition", "Environment"):
        assert definition.get(key) == (request.PLACEHOLDER_ROLE if key == "RoleArn" else planned.get(key)), key
    assert definition.get("EnableManagedSpotTraining", False) is ("--spot" in TUNING[case])
    assert definition.get("EnableNetworkIsolation", False) is ("--network-isolation" in TUNING[case])
    assert created["HyperParameterTuningJobConfig"]["Strategy"].lower() == case


def _same_job(dry: dict, sent: dict, dry_name: str, sent_name: str) -> None:
    assert json.loads(json.dumps(dry).replace(dry_name, sent_name)) == sent


@pytest.mark.slow
def test_the_training_dry_run_is_what_moto_receives(bucket, prepared, recording, capsys, monkeypatch, tmp_path):
    argv = ["--bucket", BUCKET, "--role", ROLE, "--instance-count", "2", "--spot", "--hp", "epochs=30"]
    code, out, err = invoke(submit_main, ["--dry-run", *argv], capsys)
    assert code == 0, err
    dry = json.loads(out)
    rec = recording.start()
    code, out, err = invoke(submit_main, [*argv, "--data", str(prepared), "--no-wait", "--runs-dir",
                                          str(tmp_path / "runs")], capsys)
    entries = rec.stop()
    assert code == 0, err
    (sent,) = Recording.sagemaker_calls(entries, "CreateTrainingJob")
    _same_job(dry, sent, dry["TrainingJobName"], sent["TrainingJobName"])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["isolation", "two-instances-spot"])
def test_the_tuning_dry_run_is_what_moto_receives(case, fresh_aws, bucket, prepared, recording, capsys, tmp_path):
    flags = {"isolation": ["--search", "hyperband", "--hp", "epochs=25", "--network-isolation"],
             "two-instances-spot": ["--instance-count", "2", "--spot", "--max-jobs", "4", "--max-parallel-jobs", "2"]}
    argv = ["--bucket", BUCKET, "--role", ROLE, *flags[case]]
    code, out, err = invoke(tune_main, ["--dry-run", *argv], capsys)
    assert code == 0, err
    dry = json.loads(out)
    rec = recording.start()
    code, out, err = invoke(tune_main, [*argv, "--data", str(prepared), "--no-wait", "--out", str(tmp_path / "t"),
                                        "--runs-dir", str(tmp_path / "r")], capsys)
    entries = rec.stop()
    assert code == 0, err
    (sent,) = Recording.sagemaker_calls(entries, "CreateHyperParameterTuningJob")
    _same_job(dry, sent, dry["HyperParameterTuningJobName"], sent["HyperParameterTuningJobName"])

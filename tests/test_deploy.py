"""`launch/deploy.py` against moto's SageMaker and S3 on 127.0.0.1: what it creates (image,
handler environment, model data, instance type), what it deletes, and its one-line errors.
Moto accepts the calls but runs nothing: the container itself is proven by tests/test_serving.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
DATA = "s3://models/job/output/model.tar.gz"


@pytest.fixture(scope="module")
def deploy_module():
    path = Path(__file__).resolve().parents[1] / "launch" / "deploy.py"
    spec = importlib.util.spec_from_file_location("launch_deploy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws(fresh_aws, monkeypatch):
    import boto3
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    # moto describes unset structures as {} (VpcConfig, DataCaptureConfig), which AWS never returns and
    # the SDK's response validation rejects; answer as AWS does.
    for action in ("describe_model", "describe_endpoint_config", "describe_endpoint"):
        original = getattr(SageMakerResponse, action)
        monkeypatch.setattr(SageMakerResponse, action, lambda self, original=original: ActionResult(
            {k: v for k, v in original(self).result.items() if v != {}}))

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="job/output/model.tar.gz", Body=b"archive")
    return boto3.client("sagemaker")


def _run(module, capsys, *args: str) -> tuple[int, str, str]:
    from titanic_lightning.command import run_command

    with pytest.raises(SystemExit) as exited:
        run_command(module.main, list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_deploy_then_delete(deploy_module, aws, capsys):
    code, out, err = _run(deploy_module, capsys, "--model-data", DATA, "--role", ROLE, "--endpoint-name", "titanic-t1",
                          "--instance-type", "ml.m5.large")
    assert code == 0, err
    assert "InService" in out and "--delete --endpoint-name titanic-t1" in out

    endpoint = aws.describe_endpoint(EndpointName="titanic-t1")
    config = aws.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.large", 1)
    model = aws.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert container["ModelDataUrl"] == DATA and model["ExecutionRoleArn"] == ROLE
    assert container["Image"].endswith("/pytorch-inference:2.6-cpu-py312")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"

    code, out, err = _run(deploy_module, capsys, "--delete", "--endpoint-name", "titanic-t1")
    assert code == 0, err
    assert aws.list_endpoints()["Endpoints"] == []
    assert aws.list_endpoint_configs()["EndpointConfigs"] == []
    assert aws.list_models()["Models"] == []


@pytest.mark.parametrize("args, words", [
    (["--model-data", "s3://models/job/output/absent.tar.gz", "--role", ROLE], ["absent.tar.gz", "no such object"]),
    (["--model-data", "models/model.tar.gz", "--role", ROLE], ["not an S3 object URI", "does not start with s3://"]),
    (["--model-data", "s3://b/job/model.tar.gz", "--role", ROLE], ["'b' is not an S3 bucket name", "3 to 63"]),
    (["--model-data", "s3://models/", "--role", ROLE], ["names no object"]),
    (["--model-data", DATA, "--role", "admin"], ["--role", "admin"]),
    (["--model-data", DATA], ["--role"]),
    (["--model-data", DATA, "--role", ROLE, "--endpoint-name", "bad_name"], ["--endpoint-name", "bad_name"]),
    (["--delete"], ["--endpoint-name"]),
    (["--delete", "--endpoint-name", "never-made"], ["never-made", "no such endpoint"]),
    (["--model-data", DATA, "--role", ROLE, "--instance-typo", "ml.m5.large"], ["--instance-typo"]),
])
def test_errors_are_one_line_and_create_nothing(args, words, deploy_module, aws, capsys):
    code, _, err = _run(deploy_module, capsys, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err
    assert aws.list_models()["Models"] == [] and aws.list_endpoints()["Endpoints"] == []


@pytest.mark.parametrize("args", [["--delete", "--endpoint-name", "titanic"], ["--model-data", DATA, "--role", ROLE]])
def test_no_credentials_is_one_line_that_offers_no_flag_deploy_lacks(args, deploy_module, fresh_aws, monkeypatch, capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, _, err = _run(deploy_module, capsys, *args)
    assert code == 2 and err.startswith("error: no AWS credentials: ") and err.count("\n") == 1, err
    assert "--dry-run" not in err  # deploy.py has no such flag


def test_help_says_what_every_flag_is(deploy_module, capsys):
    with pytest.raises(SystemExit):
        deploy_module.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--instance-type INSTANCE_TYPE the endpoint's instance type (default ml.m5.large" in text, text


@pytest.mark.parametrize("command", ["submit.py", "tune.py"])
def test_the_strategies_in_help_are_the_entrys(command):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    text = " ".join(subprocess.run([sys.executable, f"launch/{command}", "--help"], cwd=root, capture_output=True,
                                   text=True, check=True).stdout.split())
    assert "(auto, ddp, ddp_smddp, fsdp, tensor_parallel, pkg.mod:fn)" in text, text

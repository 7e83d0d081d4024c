"""launch/submit.py against a moto S3/SageMaker server: what is uploaded, what CreateTrainingJob
carries, what is skipped the second time, the one-line errors, and the offline --dry-run."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time

import boto3
import pytest

from launch.jobs import checks, spec
from launch.jobs.prices import load as load_prices
from launch.records import report
from tests.helpers import BUCKET, REGION, ROLE, Recording, dry_run_summary, submit_inprocess, submit_subprocess
from titanic_lightning.command import run_command
from titanic_lightning.errors import UsageError

DATA_KEYS = {
    "titanic-lightning/data/train/train_data.npz",
    "titanic-lightning/data/train/preprocessing.json",
    "titanic-lightning/data/val/val_data.npz",
    "titanic-lightning/data/test/test_data.npz",
}


@pytest.fixture
def data_dir(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    return out


def _objects(bucket: str) -> dict[str, dict]:
    s3 = boto3.client("s3", region_name=REGION)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.head_object(Bucket=bucket, Key=k) for k in keys}


def _args(data_dir, *extra):
    return ["--bucket", BUCKET, "--role", ROLE, "--data", str(data_dir), *extra]


@pytest.mark.slow
def test_submit_uploads_channels_and_creates_the_intended_job(bucket, data_dir, recording, capsys, tmp_path):
    rec = recording.start()
    code, out, err = submit_inprocess(
        _args(data_dir, "--instance-count", "2", "--spot", "--max-run", "1800", "--hp", "epochs=30",
              "--hp", "learning_rate=0.003", "--strategy", "ddp", "--no-wait"), capsys)
    entries = rec.stop()
    assert code == 0, err
    submitted = json.loads(out.strip().splitlines()[-1])
    name = submitted["job_name"]
    assert set(submitted["uploaded"]) == {f"s3://{BUCKET}/{k}" for k in DATA_KEYS}

    objects = _objects(bucket)
    assert DATA_KEYS <= set(objects)
    for key in DATA_KEYS:
        head = objects[key]
        expected_type = "application/x-npz" if key.endswith(".npz") else "application/json"
        assert head["ContentType"] == expected_type
        local = data_dir / key.rsplit("/", 1)[1]
        assert head["Metadata"]["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()

    d = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName=name)
    assert name.startswith("titanic-lightning-m5-large-x2-spot-")
    assert d["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert d["ResourceConfig"]["InstanceCount"] == 2
    assert d["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8-cpu-py312")
    assert d["HyperParameters"] == {"epochs": "30", "learning_rate": "0.003", "strategy": "ddp"}
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in d["InputDataConfig"]}
    for name_ in ("train", "val", "test"):
        assert channels[name_]["S3Uri"] == f"s3://{BUCKET}/titanic-lightning/data/{name_}/"
        assert channels[name_]["S3DataDistributionType"] == "FullyReplicated"
    # The job's own checkpoint URI, under its name, as printed.
    assert d["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/titanic-lightning/titanic-lightning-m5-large-x2-spot/{name}/checkpoints",
        "LocalPath": "/opt/ml/checkpoints"}
    assert submitted["checkpoint_s3_uri"] == d["CheckpointConfig"]["S3Uri"] and submitted["resume"] is None
    assert d["EnableManagedSpotTraining"] is True
    assert d["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 3600}
    assert d["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/titanic-lightning/output/"
    assert d["TensorBoardOutputConfig"]["LocalPath"] == "/opt/ml/output/data/tensorboard"
    assert d["RoleArn"] == ROLE

    # moto does not echo metric definitions, environment or tags: read the request itself.
    (request,) = Recording.sagemaker_calls(entries, "CreateTrainingJob")
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == spec.METRIC_DEFINITIONS
    assert request["Environment"] == {"PYTHONPATH": "/opt/ml/input/data/code"}
    assert {"Key": "project", "Value": "titanic-lightning"} in request["Tags"]

    # The distribution and entry script travel in the SDK's sm_drivers channel; the code channel
    # holds only what the job needs.
    s3 = boto3.client("s3", region_name=REGION)
    drivers = channels["sm_drivers"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
    distributed = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{drivers}/distributed.json")["Body"].read())
    assert distributed["process_count_per_node"] is None and "smp" in distributed
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{drivers}/distributed_drivers/torchrun_driver.py")["KeyCount"] == 1
    source = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{drivers}/sourcecode.json")["Body"].read())
    assert source["entry_script"] == "entry/train.py" and source["requirements"] == "requirements.txt"
    code_prefix = channels["code"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
    shipped = {o["Key"][len(code_prefix) + 1:] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=code_prefix)["Contents"]}
    assert {"entry/train.py", "titanic_lightning/environment.py", "requirements.txt"} <= shipped
    assert {p.split("/")[0] for p in shipped} == {"entry", "titanic_lightning", "requirements.txt"}
    requirements = s3.get_object(Bucket=BUCKET, Key=f"{code_prefix}/requirements.txt")["Body"].read().decode()
    assert "lightning" in requirements and not re.search(r"^torch\b", requirements, re.M)


def test_single_cpu_instance_is_not_distributed(bucket, data_dir, capsys):
    code, out, err = submit_inprocess(_args(data_dir, "--no-wait"), capsys)
    assert code == 0, err
    name = json.loads(out.strip().splitlines()[-1])["job_name"]
    d = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName=name)
    assert d["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert d["EnableManagedSpotTraining"] is False
    drivers = {c["ChannelName"]: c for c in d["InputDataConfig"]}["sm_drivers"]["DataSource"]["S3DataSource"]["S3Uri"]
    key = drivers.split(f"s3://{BUCKET}/", 1)[1] + "/distributed.json"
    s3 = boto3.client("s3", region_name=REGION)
    assert json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == {}


@pytest.mark.slow
def test_second_submit_with_unchanged_data_uploads_nothing(bucket, data_dir, recording, capsys):
    code, out, err = submit_inprocess(_args(data_dir, "--no-wait"), capsys)
    assert code == 0, err
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--no-wait"), capsys)
    entries = rec.stop()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["uploaded"] == [] and len(result["unchanged"]) == len(DATA_KEYS)
    assert err.count("unchanged, not uploaded") == len(DATA_KEYS)
    assert not [u for u in Recording.s3_puts(entries) if "/titanic-lightning/data/" in u]

    # A changed file is uploaded again, alone.
    (data_dir / "preprocessing.json").write_text((data_dir / "preprocessing.json").read_text() + " ")
    code, out, err = submit_inprocess(_args(data_dir, "--no-wait"), capsys)
    assert json.loads(out.strip().splitlines()[-1])["uploaded"] == [
        f"s3://{BUCKET}/titanic-lightning/data/train/preprocessing.json"]


@pytest.mark.parametrize(
    "case, extra, expected",
    [
        ("no credentials", [], "no AWS credentials: run `aws configure`"),
        ("no role", ["--bucket", BUCKET], "no IAM role"),
        ("bad bucket", ["--bucket", "Not_A_Bucket", "--role", ROLE], "not a valid S3 bucket name"),
        ("unknown instance type", ["--instance-type", "ml.m9.huge", "--bucket", BUCKET, "--role", ROLE],
         "unknown instance type"),
        ("gpu on a cpu type", ["--gpu", "--instance-type", "ml.m5.xlarge", "--bucket", BUCKET, "--role", ROLE],
         "has no GPU"),
        ("bad role", ["--bucket", BUCKET, "--role", "TitanicRole"], "not an IAM role ARN"),
        ("missing bucket", ["--bucket", "no-such-bucket-here", "--role", ROLE], "no such bucket"),
        ("resume of no job", ["--bucket", BUCKET, "--role", ROLE, "--resume", "titanic-lightning-m5-large-x1-19990101000000"],
         "--resume titanic-lightning-m5-large-x1-19990101000000: no such training job in us-east-1"),
        ("resume of no job name", ["--bucket", BUCKET, "--role", ROLE, "--resume", "a/../b"], "not a training job name"),
    ],
)
def test_errors_are_one_line_exit_2_and_upload_nothing(case, extra, expected, bucket, tmp_path, monkeypatch,
                                                        recording, capsys):
    if case == "no credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    data = tmp_path / "fresh-data"
    rec = recording.start()
    code, out, err = submit_inprocess(["--data", str(data), *extra], capsys)
    entries = rec.stop()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert lines[0].endswith("; --dry-run needs none") == (case == "no credentials")
    assert "Traceback" not in err and out == ""
    assert Recording.s3_puts(entries) == []
    assert _objects(bucket) == {}
    assert not data.exists()  # not even prepared locally


def test_error_from_the_command_line_is_one_line_without_traceback(tmp_path):
    result = submit_subprocess(["--instance-count", "0"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --instance-count 0: must be at least 1"]


@pytest.mark.slow
def test_dry_run_needs_no_endpoint_and_no_credentials(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           # Anything that tried to reach AWS would hit this closed port and fail.
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = submit_subprocess(["--dry-run", "--instance-count", "2", "--spot", "--hp", "epochs=40"], cwd=tmp_path,
                               env=env)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the request: exactly one JSON object, nothing else
    plan = dry_run_summary(result.stderr)
    assert {"instance_type", "instance_count", "image_uri", "distributed", "hyperparameters", "channels",
            "metric_definitions", "stopping_condition", "checkpoint_s3_uri", "output_s3_uri", "spot",
            "estimated_usd_per_hour"} <= set(plan)
    assert plan["instance_type"] == "ml.m5.large" and plan["instance_count"] == 2
    assert plan["distributed"] == {"type": "torchrun", "process_count_per_node": None}
    assert plan["image_uri"] == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.8-cpu-py312"
    assert plan["hyperparameters"] == {"epochs": "40"}
    assert set(plan["channels"]) == {"train", "val", "test"}
    assert plan["channels"]["train"].endswith("/titanic-lightning/data/train/")
    assert plan["stopping_condition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert plan["spot"] is True
    assert plan["estimated_usd_per_hour"] == pytest.approx(2 * 0.115)
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # nothing prepared or written


@pytest.mark.parametrize(
    "flags, instance, distributed, image_kind",
    [
        ([], "ml.m5.large", False, "cpu"),
        (["--gpu"], "ml.g4dn.xlarge", False, "gpu"),
        (["--instance-type", "ml.g4dn.12xlarge"], "ml.g4dn.12xlarge", True, "gpu"),  # 4 GPUs on one instance
        (["--gpu", "--instance-count", "2"], "ml.g4dn.xlarge", True, "gpu"),
    ],
)
def test_dry_run_instance_and_distribution_choice(flags, instance, distributed, image_kind, capsys, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    code, out, err = submit_inprocess(["--dry-run", "--bucket", BUCKET, *flags], capsys)
    assert code == 0, err
    plan = dry_run_summary(err)
    assert plan["instance_type"] == instance
    assert (plan["distributed"] is not None) is distributed
    assert f"-{image_kind}-py312" in plan["image_uri"]
    base = plan["base_job_name"]
    assert plan["checkpoint_s3_uri"] == f"s3://{BUCKET}/titanic-lightning/{base}/<job-name>/checkpoints"
    assert plan["role"] == spec.ROLE_PLACEHOLDER


def test_every_metric_the_model_logs_has_a_regex_and_a_place_on_the_printed_lines():
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from titanic_lightning.contracts import COMPARED_METRICS, EPOCH_METRICS, FINAL_METRICS
    from titanic_lightning.model.module import TitanicClassifier

    x, y = torch.randn(16, 3), torch.tensor([0.0, 1.0] * 8)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    model = TitanicClassifier(input_size=3)
    trainer.fit(model, loader, loader)
    logged = set(trainer.callback_metrics)
    trainer.test(model, loader, verbose=False)
    logged |= set(trainer.callback_metrics)

    assert logged == set(EPOCH_METRICS) | set(FINAL_METRICS)
    assert logged <= {m["Name"] for m in spec.METRIC_DEFINITIONS}
    assert set(COMPARED_METRICS) <= logged  # what --compare shows is what SageMaker records


def test_metric_regexes_read_the_lines_the_entry_prints():
    from titanic_lightning.contracts import EPOCH_LINE, FINAL_LINE
    from titanic_lightning.training.callbacks import metric_line

    epoch_values = {"epoch": 3, "train_loss": 0.4411, "val_loss": 0.4213, "val_acc": 0.8182, "val_auroc": 0.8712,
                    "val_f1": 0.7547}
    final_values = {"best_epoch": 12, "epochs_run": 32, "val_loss": 0.4102, "val_acc": 0.8322, "val_auroc": 0.88,
                    "val_f1": 0.76, "test_loss": 0.3999, "test_acc": 0.8268, "test_auroc": 0.8645, "test_f1": 0.7612}
    epoch_line = metric_line(epoch_values, EPOCH_LINE)
    final_line = metric_line(final_values, FINAL_LINE, prefix="final: ")
    regex = {m["Name"]: re.compile(m["Regex"]) for m in spec.METRIC_DEFINITIONS}
    assert {"val_loss", "val_acc", "val_auroc", "test_acc", "train_loss"} <= set(regex)

    for name, pattern in regex.items():
        on_epoch = pattern.search(epoch_line)
        on_final = pattern.search(final_line)
        if name in epoch_values:
            assert on_epoch and float(on_epoch.group(1)) == pytest.approx(epoch_values[name]), name
        else:
            assert on_epoch is None, name
        if name in final_values:
            assert on_final and float(on_final.group(1)) == pytest.approx(final_values[name]), name
        else:
            assert on_final is None, name  # `epoch` must not match best_epoch= or epochs_run=
    # Other output must not produce metrics.
    for noise in ("Epoch 3/10 loss 0.5", "saved model/model.pt and metrics.json", "train_loss: 0.3"):
        assert not any(p.search(noise) for p in regex.values())


@pytest.mark.slow
def test_wait_records_the_run_and_compare_prints_one_table(bucket, data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = submit_inprocess(_args(data_dir, "--runs-dir", str(runs)), capsys)
    assert code == 0, err
    (path,) = runs.glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "Completed" and record["instance_type"] == "ml.m5.large"
    assert record["model_artifact"].startswith(f"s3://{BUCKET}/titanic-lightning/output/")
    assert f"job {record['job_name']}: Completed\n" in out
    for label in ("wall time", "billable time", "estimated cost", "model artifact", "final metrics"):
        assert label in out

    # The lesson's three runs, as describe_training_job would report them: billable seconds per
    # instance. The lesson's 228 s for two instances is the SDK's log line, already the total.
    lesson = [("cpu", "ml.m5.large", 1, 197.6, 135), ("gpu", "ml.g4dn.xlarge", 1, 409.7, 350),
              ("two", "ml.m5.xlarge", 2, 198.4, 114)]
    prices = load_prices()
    for name, instance, count, wall, billable in lesson:
        described = {"TrainingJobName": name, "TrainingJobStatus": "Completed", "BillableTimeInSeconds": billable,
                     "TrainingTimeInSeconds": billable, "ResourceConfig": {"InstanceType": instance,
                                                                           "InstanceCount": count},
                     "FinalMetricDataList": [{"MetricName": "val_acc", "Value": 0.81}]}
        report.save(report.summarize(described, prices, wall), runs)
    code, out, err = submit_inprocess(["--compare", *sorted(str(p) for p in runs.glob("*.json"))], capsys)
    assert code == 0, err
    table = out.strip().splitlines()
    assert len(table) == 2 + 4 and "billable s" in table[0] and "cost USD" in table[0]
    gpu_row = next(line for line in table if line.startswith("gpu "))
    assert "409.7" in gpu_row and "350" in gpu_row and f"{350 * 0.736 / 3600:.4f}" in gpu_row
    two_row = next(line for line in table if line.startswith("two "))
    assert f"{228 * 0.23 / 3600:.4f}" in two_row and " 114 " in two_row and " 228 " in two_row
    two = report.summarize({"TrainingJobName": "two", "BillableTimeInSeconds": 114,
                            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2}}, prices, None)
    assert two["billable_instance_seconds"] == 228 and two["estimated_cost_usd"] == round(228 * 0.23 / 3600, 6)
    assert "114 s per instance, 228 instance-seconds billed" in report.human(two)


def test_spot_saving_and_price_file_override(tmp_path):
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"as_of": "2030-01-01", "usd_per_hour": {"ml.m5.large": 1.0}}))
    prices = load_prices(table)
    record = report.summarize({"TrainingJobName": "j", "TrainingJobStatus": "Completed",
                               "EnableManagedSpotTraining": True, "TrainingTimeInSeconds": 400,
                               "BillableTimeInSeconds": 100,
                               "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2}}, prices, 420.0)
    assert record["spot_saving_percent"] == 75.0
    assert record["estimated_cost_usd"] == pytest.approx(100 * 2 / 3600, abs=1e-6)
    assert record["prices_as_of"] == "2030-01-01"
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(Exception, match="not a price table"):
        load_prices(tmp_path / "broken.json")


def _next_second() -> None:
    # The SDK names a job after the second it is created in; two submissions must not share one.
    time.sleep(1.05 - time.time() % 1)


@pytest.mark.slow
def test_each_job_checkpoints_under_its_own_name_and_resume_names_the_job(bucket, data_dir, recording, capsys):
    """The same command twice: two jobs, two checkpoint URIs. `--resume JOB` gives the new job JOB's URI."""
    sagemaker, s3 = boto3.client("sagemaker", region_name=REGION), boto3.client("s3", region_name=REGION)
    jobs = []
    for _ in range(2):
        _next_second()
        code, out, err = submit_inprocess(_args(data_dir, "--hp", "epochs=3", "--no-wait"), capsys)
        assert code == 0, err
        jobs.append(json.loads(out.strip().splitlines()[-1]))
    first, again = jobs
    assert first["job_name"] != again["job_name"] and first["checkpoint_s3_uri"] != again["checkpoint_s3_uri"]
    for submitted in jobs:
        uri = sagemaker.describe_training_job(TrainingJobName=submitted["job_name"])["CheckpointConfig"]["S3Uri"]
        assert uri == submitted["checkpoint_s3_uri"] == checks.build_spec(bucket=BUCKET).job_checkpoint_s3_uri(
            submitted["job_name"])

    # Nothing to resume before the first checkpoint: one line, exit 2, nothing uploaded or created.
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--hp", "epochs=3", "--resume", first["job_name"]), capsys)
    entries = rec.stop()
    assert code == 2 and out == ""
    assert err.strip() == (f"error: --resume {first['job_name']}: no last.ckpt under {first['checkpoint_s3_uri']} "
                           "(the job ended before its first checkpoint); nothing to resume")
    assert Recording.s3_puts(entries) == [] and Recording.sagemaker_calls(entries, "CreateTrainingJob") == []

    bucket_name, _, key = first["checkpoint_s3_uri"].removeprefix("s3://").partition("/")
    s3.put_object(Bucket=bucket_name, Key=f"{key}/last.ckpt", Body=b"a checkpoint")
    _next_second()
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--hp", "epochs=3", "--resume", first["job_name"], "--no-wait"),
                                      capsys)
    entries = rec.stop()
    assert code == 0, err
    resumed = json.loads(out.strip().splitlines()[-1])
    assert resumed["resume"] == first["job_name"] and resumed["checkpoint_s3_uri"] == first["checkpoint_s3_uri"]
    (request,) = Recording.sagemaker_calls(entries, "CreateTrainingJob")
    assert request["CheckpointConfig"] == {"S3Uri": first["checkpoint_s3_uri"], "LocalPath": "/opt/ml/checkpoints"}

    # A resume of that job continues in the URI its description names, the first job's.
    _next_second()
    code, out, err = submit_inprocess(_args(data_dir, "--resume", resumed["job_name"], "--no-wait"), capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["checkpoint_s3_uri"] == first["checkpoint_s3_uri"]

    # A job still running is not resumed: both would write the same checkpoints.
    from moto.sagemaker.models import sagemaker_backends

    running = sagemaker_backends["123456789012"][REGION].training_jobs[first["job_name"]]
    running.training_job_status = "InProgress"
    code, out, err = submit_inprocess(_args(data_dir, "--resume", first["job_name"], "--no-wait"), capsys)
    running.training_job_status = "Completed"
    assert code == 2 and err.strip().startswith(f"error: --resume {first['job_name']}: the job is InProgress")


def test_dry_run_shows_the_checkpoint_uri_a_resume_restores(capsys, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    name = "titanic-lightning-m5-large-x1-spot-20250102030405"
    code, out, err = submit_inprocess(["--dry-run", "--bucket", BUCKET, "--resume", name], capsys)
    assert code == 0, err
    plan = dry_run_summary(err)
    # Derived from the name: the resumed job was a spot job, this one is not.
    assert plan["resume"] == name and plan["base_job_name"] == "titanic-lightning-m5-large-x1"
    assert plan["checkpoint_s3_uri"] == f"s3://{BUCKET}/titanic-lightning/titanic-lightning-m5-large-x1-spot/{name}/checkpoints"


# --- the wheelhouse and network isolation ------------------------------------------------------


def test_network_isolation_job_carries_the_flag_and_installs_from_its_wheels_channel(
        bucket, data_dir, recording, capsys, cached_wheelhouse):
    key, wheel = cached_wheelhouse
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--network-isolation", "--no-wait"), capsys)
    entries = rec.stop()
    assert code == 0, err
    submitted = json.loads(out.strip().splitlines()[-1])
    wheels_uri = f"s3://{BUCKET}/titanic-lightning/wheels/{key}/"
    assert f"{wheels_uri}{wheel.name}" in submitted["uploaded"]

    (request,) = Recording.sagemaker_calls(entries, "CreateTrainingJob")
    assert request["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"] for c in request["InputDataConfig"]}
    assert channels["wheels"]["S3Uri"] == wheels_uri
    assert channels["wheels"]["S3DataDistributionType"] == "FullyReplicated"
    s3 = boto3.client("s3", region_name=REGION)
    assert s3.get_object(Bucket=BUCKET, Key=f"titanic-lightning/wheels/{key}/{wheel.name}")["Body"].read() == \
        wheel.read_bytes()
    code_prefix = channels["code"]["S3Uri"].split(f"s3://{BUCKET}/", 1)[1]
    requirements = s3.get_object(Bucket=BUCKET, Key=f"{code_prefix}/requirements.txt")["Body"].read().decode()
    assert requirements.splitlines()[:2] == ["--no-index", "--find-links ../wheels"]

    # Submitted again: the wheels, like the data, are not uploaded a second time.
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--network-isolation", "--no-wait"), capsys)
    entries = rec.stop()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["uploaded"] == [] and f"{wheels_uri}{wheel.name}" in result["unchanged"]
    assert not [u for u in Recording.s3_puts(entries) if "/titanic-lightning/wheels/" in u]


def test_a_plain_job_has_no_wheels_channel_and_no_isolation(bucket, data_dir, recording, capsys):
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--no-wait"), capsys)
    (request,) = Recording.sagemaker_calls(rec.stop(), "CreateTrainingJob")
    assert code == 0, err
    assert not request.get("EnableNetworkIsolation")
    assert "wheels" not in {c["ChannelName"] for c in request["InputDataConfig"]}


@pytest.mark.parametrize("flags, isolated, wheels", [
    ([], False, False), (["--wheelhouse"], False, True), (["--network-isolation"], True, True)])
def test_dry_run_shows_network_isolation_and_the_wheelhouse(flags, isolated, wheels, capsys, monkeypatch):
    from launch.jobs import code, wheelhouse

    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    code_, out, err = submit_inprocess(["--dry-run", "--bucket", BUCKET, *flags], capsys)
    assert code_ == 0, err
    plan = dry_run_summary(err)
    assert plan["network_isolation"] is isolated and plan["wheelhouse"] is wheels
    key = wheelhouse.key(code.requirements(), wheelhouse.Target.image(spec.PY_VERSION))
    assert plan["channels"].get("wheels") == (f"s3://{BUCKET}/titanic-lightning/wheels/{key}/" if wheels else None)


@pytest.mark.parametrize("argv, message", [
    (["--container-venv"], "error: --container-venv sets up the hosts of --local: add --local"),
    (["--dry-run", "--container-venv"], "error: --container-venv sets up the hosts of --local: add --local"),
])
def test_bad_wheelhouse_flags_are_one_line(argv, message, capsys):
    code, out, err = submit_inprocess(argv, capsys)
    assert code == 2 and err.strip().splitlines() == [message]


@pytest.mark.parametrize("command", ["submit", "tune"])
@pytest.mark.parametrize("flags, env, source", [
    (["--role", "notarn"], {}, "--role notarn"),
    (["--role", "arn:aws:iam::123:role/x"], {}, "--role arn:aws:iam::123:role/x"),  # the account has 12 digits
    ([], {"SAGEMAKER_ROLE": "bogus"}, "SAGEMAKER_ROLE bogus"),
])
def test_a_dry_run_refuses_a_role_that_is_not_a_role_arn_in_one_line(command, flags, env, source, capsys, monkeypatch):
    import importlib

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exc:
        run_command(importlib.import_module(f"launch.{command}")._main, ["--dry-run", *flags])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {source}: not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"]


@pytest.mark.parametrize("command, flags, flag", [
    ("submit", ["--local", "--jobs-dir", ""], "--jobs-dir"), ("submit", ["--local", "--runs-dir", ""], "--runs-dir"),
    ("submit", ["--local", "--data", ""], "--data"), ("submit", ["--dry-run", "--prices", ""], "--prices"),
    ("submit", ["--compare", "runs/a.json", ""], "--compare"),
    ("submit", ["--compare", "runs/a.json", "--plot", ""], "--plot"),
    ("tune", ["--local", "--out", ""], "--out"), ("tune", ["--local", "--runs-dir", ""], "--runs-dir"),
    ("tune", ["--local", "--data", ""], "--data"), ("tune", ["--dry-run", "--prices", ""], "--prices"),
    ("slurm", ["--dry-run", "--data", ""], "--data"), ("slurm", ["--runs-dir", ""], "--runs-dir"),
])
def test_an_empty_path_flag_is_refused_in_one_line_not_read_as_this_folder(command, flags, flag, tmp_path, capsys,
                                                                           monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(f"launch.{command}")
    with pytest.raises(SystemExit) as exc:
        run_command(getattr(module, "_main", module.main), flags)
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and list(tmp_path.iterdir()) == []
    assert err.strip().splitlines() == [f"error: argument {flag}: empty; give a path, or leave the flag out for the "
                                        f"default (see python launch/{command}.py --help)"]


def test_a_wheelhouse_that_cannot_be_built_stops_the_job_before_any_upload(bucket, data_dir, recording, capsys,
                                                                           tmp_path, monkeypatch):
    from launch.jobs import wheelhouse

    monkeypatch.setenv(wheelhouse.CACHE_VARIABLE, str(tmp_path / "empty-cache"))

    def offline(*args, **kwargs):
        raise UsageError("building the wheelhouse: resolving the requirements failed: ERROR: no index reachable")

    monkeypatch.setattr(wheelhouse, "resolve", offline)
    rec = recording.start()
    code, out, err = submit_inprocess(_args(data_dir, "--network-isolation", "--no-wait"), capsys)
    entries = rec.stop()
    assert code == 2 and err.strip().splitlines()[-1] == (
        "error: building the wheelhouse: resolving the requirements failed: ERROR: no index reachable")
    assert Recording.s3_puts(entries) == [] and not Recording.sagemaker_calls(entries, "CreateTrainingJob")

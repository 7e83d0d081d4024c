"""Submit a `JobSpec` as a SageMaker training job with the SDK's `ModelTrainer`, after `resolve_aws` has
checked credentials, region, role, bucket and `--resume`. Endpoints follow botocore's configuration
(`AWS_ENDPOINT_URL` included), which is how the tests reach an emulator."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launch.console import log
from launch.jobs import code, s3data, wheelhouse
from launch.jobs.checks import check_role
from launch.jobs.spec import METRIC_DEFINITIONS, PY_VERSION, TENSORBOARD_LOCAL_PATH, JobSpec
from titanic_lightning.contracts import CHECKPOINT_FILE
from titanic_lightning.errors import UsageError, one_line
from titanic_lightning.sagemaker_facts import CHECKPOINT_DIR

NO_ROLE = ("no IAM role for the job: pass --role arn:aws:iam::<account>:role/<name> or set SAGEMAKER_ROLE "
           "(only inside SageMaker is the execution role found by itself)")


@dataclass
class Aws:
    boto_session: object
    session: object  # sagemaker.core.helper.session_helper.Session
    spec: JobSpec


def open_session(region_flag: str | None, hint: str = ""):
    """A boto3 session with credentials and a region, each a one-line error (ending with `hint`) when missing."""
    import boto3

    session = boto3.Session(region_name=region_flag or None)
    if session.get_credentials() is None:
        raise UsageError("no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_ACCESS_KEY_ID and "
                         f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE{hint}")
    if not session.region_name:
        raise UsageError("no AWS region: pass --region us-east-1 (or set AWS_DEFAULT_REGION)")
    return session


def resolve_aws(spec: JobSpec, role_flag: str | None, region_flag: str | None) -> Aws:
    """Credentials → region → role → bucket, each a one-line error when missing."""
    from botocore.exceptions import BotoCoreError, ClientError
    from sagemaker.core.helper.session_helper import Session

    boto_session = open_session(region_flag, "; --dry-run needs none")

    def session(bucket: str | None) -> Session:
        return Session(boto_session=boto_session, default_bucket=bucket, default_bucket_prefix=spec.prefix)

    role = role_flag or os.environ.get("SAGEMAKER_ROLE")
    bucket = spec.bucket
    try:
        if role:
            check_role(role, "--role" if role_flag else "SAGEMAKER_ROLE")
        else:
            role = _execution_role(session(bucket))
        if bucket is None:
            bucket = session(None).default_bucket()
        else:
            _check_bucket_reachable(boto_session, bucket)
    except (ClientError, BotoCoreError) as exc:
        raise UsageError(f"AWS refused a check before submitting: {one_line(exc)}") from None
    spec = dataclasses.replace(spec, region=boto_session.region_name, role=role, bucket=bucket)
    if spec.resume is not None:
        spec = dataclasses.replace(spec, resume_checkpoint_s3_uri=resumable_checkpoints(boto_session, spec.resume))
    return Aws(boto_session=boto_session, session=session(bucket), spec=spec)


@contextlib.contextmanager
def _known_job(source: str, region: str):
    """AWS's answer for a training job that does not exist, as one line naming `source`."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            raise UsageError(f"{source}: no such training job in {region}") from None
        raise


def resumable_checkpoints(boto_session, job_name: str) -> str:
    """The checkpoint URI of `job_name`, which must have ended and left a last.ckpt there; read from its
    description, since a job that itself resumed another carries on in that one's URI."""
    with _known_job(f"--resume {job_name}", boto_session.region_name):
        described = boto_session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    status = described.get("TrainingJobStatus")
    if status in ("InProgress", "Stopping"):
        raise UsageError(f"--resume {job_name}: the job is {status}; a resume would share its checkpoints while it "
                         "writes them, so stop it or let it end first")
    uri = (described.get("CheckpointConfig") or {}).get("S3Uri")
    if not uri:
        raise UsageError(f"--resume {job_name}: the job has no checkpoint configuration; nothing to resume")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    last = f"{key.rstrip('/')}/{CHECKPOINT_FILE}".lstrip("/")
    listed = boto_session.client("s3").list_objects_v2(Bucket=bucket, Prefix=last, MaxKeys=1)
    if not any(obj["Key"] == last for obj in listed.get("Contents", [])):
        raise UsageError(f"--resume {job_name}: no {CHECKPOINT_FILE} under {uri} (the job ended before its first "
                         "checkpoint); nothing to resume")
    return uri


def _execution_role(session) -> str:
    """Inside SageMaker (a notebook's metadata file, or a job) the caller's own role; elsewhere a clear error."""
    from sagemaker.core.helper.session_helper import NOTEBOOK_METADATA_FILE, get_execution_role

    if not (os.path.exists(NOTEBOOK_METADATA_FILE) or os.environ.get("TRAINING_JOB_NAME")):
        raise UsageError(NO_ROLE)
    try:
        return get_execution_role(session)
    except ValueError:
        raise UsageError(NO_ROLE) from None


def _check_bucket_reachable(boto_session, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        boto_session.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        code_ = exc.response.get("Error", {}).get("Code", "")
        if code_ in ("404", "NoSuchBucket", "NotFound"):
            raise UsageError(f"--bucket {bucket}: no such bucket; create it or omit --bucket for the session's "
                             "default bucket") from None
        raise UsageError(f"--bucket {bucket}: not accessible ({code_}); check the bucket's region and your permissions") from None


def build_trainer(aws: Aws, code_dir: Path):
    """The SDK's ModelTrainer for this spec: image, code, compute, distribution, data and outputs."""
    from sagemaker.core.training import configs
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    spec = aws.spec
    trainer = ModelTrainer(
        training_image=spec.image_uri(),
        source_code=configs.SourceCode(source_dir=str(code_dir), entry_script=code.ENTRY_SCRIPT,
                                       requirements=code.REQUIREMENTS_FILE),
        compute=configs.Compute(instance_type=spec.instance_type, instance_count=spec.instance_count,
                                enable_managed_spot_training=spec.spot or None),
        distributed=Torchrun(process_count_per_node=spec.process_count_per_node) if spec.distributed else None,
        networking=configs.Networking(enable_network_isolation=True) if spec.network_isolation else None,
        hyperparameters=dict(spec.hyperparameters),
        environment={"PYTHONPATH": code.CODE_DIR_IN_CONTAINER},
        role=spec.role,
        sagemaker_session=aws.session,
        base_job_name=spec.base_job_name,
        stopping_condition=configs.StoppingCondition(max_runtime_in_seconds=spec.max_run_s,
                                                     max_wait_time_in_seconds=spec.max_wait_s),
        # No URI for a new job: the SDK gives it its own, under the job's name. A resume names
        # the resumed job's URI, which SageMaker restores into the local path at the start.
        checkpoint_config=configs.CheckpointConfig(s3_uri=spec.resume_checkpoint_s3_uri if spec.resume else None,
                                                   local_path=CHECKPOINT_DIR),
        output_data_config=configs.OutputDataConfig(s3_output_path=spec.output_s3_uri),
        tags=[configs.Tag(key=k, value=v) for k, v in spec.tags.items()],
    )
    return trainer.with_metric_definitions(
        [configs.MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
    ).with_tensorboard_output_config(
        configs.TensorBoardOutputConfig(s3_output_path=spec.tensorboard_s3_uri, local_path=TENSORBOARD_LOCAL_PATH)
    )


def input_data(spec: JobSpec) -> list:
    """The channels as S3 prefixes; the SDK makes each FullyReplicated (the entry shards by rank itself)."""
    from sagemaker.core.training.configs import InputData

    return [InputData(channel_name=name, data_source=uri) for name, uri in spec.channels.items()]


@dataclass
class Submitted:
    job_name: str
    submitted_at: float
    upload: dict
    checkpoint_s3_uri: str


def upload_inputs(aws: Aws, data_dir: Path) -> dict:
    """Upload the data channels (and the wheels), skipping unchanged objects; what was uploaded and unchanged."""
    s3data.ensure_prepared(data_dir)
    channels = aws.spec.channels
    files = {channels[name]: paths for name, paths in s3data.channel_files(data_dir).items()}
    if aws.spec.uses_wheelhouse:  # built (or found in the cache) before any upload: building it may fail
        files[channels[wheelhouse.CHANNEL]] = wheelhouse.build(code.requirements(), wheelhouse.Target.image(PY_VERSION)).files
    return s3data.upload(aws.boto_session.client("s3"), files)


def submit(aws: Aws, data_dir: Path, wait: bool) -> Submitted:
    """Upload data, stage code, create the job (and follow it to the end when `wait`)."""
    upload = upload_inputs(aws, data_dir)
    with tempfile.TemporaryDirectory(prefix="titanic-code-") as tmp:
        trainer = build_trainer(aws, code.stage(Path(tmp), wheelhouse=aws.spec.uses_wheelhouse))
        started = time.time()
        trainer.train(input_data_config=input_data(aws.spec), wait=False, logs=False)
        job = trainer._latest_training_job  # how the SDK's own ModelTrainer docstring reaches the created job
        checkpoints = trainer.checkpoint_config.s3_uri  # the SDK filled in this job's own URI
        log(f"submitted training job {job.training_job_name}; checkpoints in {checkpoints}")
        if wait:
            _follow(job)
    return Submitted(job_name=job.training_job_name, submitted_at=started, upload=upload, checkpoint_s3_uri=checkpoints)


def _follow(job, logs: bool = True) -> None:
    """Wait for the SDK's TrainingJob to end, printing its logs; a failed one too (its record says why)."""
    from sagemaker.core.utils.exceptions import FailedStatusError

    with contextlib.suppress(FailedStatusError):
        job.wait(logs=logs)


def wait(session, job_name: str, logs: bool = True) -> None:
    """Follow the training job `job_name` (submitted earlier, by any means) until it ends."""
    from sagemaker.core.resources import TrainingJob

    with _known_job(job_name, session.region_name):
        job = TrainingJob.get(training_job_name=job_name, session=session, region=session.region_name)
    _follow(job, logs=logs)

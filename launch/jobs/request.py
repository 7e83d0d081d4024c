"""The exact request the SDK would send to create a job, built by the SDK itself with no AWS call.

The real submission path runs (`remote.build_trainer`, `ModelTrainer.train`, the tuner's `tune`)
on a boto3 session whose every call is answered here, through botocore's documented event hooks,
before anything leaves the process: the S3 uploads of the code and the SDK's driver scripts
succeed without sending a byte, and the create call is stopped after botocore has validated and
serialized it, its JSON body kept. The body is what SageMaker would receive, so it can be
diffed, or handed to `aws sagemaker create-training-job --cli-input-json`.

Nothing AWS-specific is guessed: where no role or bucket is given, the account, role and bucket
are placeholders that still match the service's patterns (account 000000000000).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from launch.jobs.spec import JobSpec

PLACEHOLDER_ACCOUNT = "000000000000"
PLACEHOLDER_ROLE = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/YOUR-SAGEMAKER-EXECUTION-ROLE"
# The SDK's default bucket name for that account, `sagemaker-<region>-<account>`.
PLACEHOLDER_CREDENTIALS = {"aws_access_key_id": "DRY-RUN-NOT-A-KEY", "aws_secret_access_key": "DRY-RUN-NOT-A-SECRET"}


def placeholder_bucket(region: str) -> str:
    return f"sagemaker-{region}-{PLACEHOLDER_ACCOUNT}"


class _Captured(Exception):
    def __init__(self, request: dict):
        super().__init__("request captured")
        self.request = request


class _Answered:
    """The HTTP half of a response botocore takes from a `before-call` handler."""

    status_code = 200
    headers: dict = {}
    content = b""


def _offline_session(region: str, bucket: str, operation: str):
    """A boto3 session whose calls never leave the process, answered as for an account that owns
    `bucket`; `operation` (sagemaker) raises `_Captured`."""
    import datetime

    import boto3

    session = boto3.Session(region_name=region, **PLACEHOLDER_CREDENTIALS)

    def answer(model, params, **_):
        if model.service_model.service_name == "sagemaker" and model.name == operation:
            raise _Captured(json.loads(params["body"]))
        if model.name == "GetCallerIdentity":
            return _Answered(), {"Account": PLACEHOLDER_ACCOUNT,
                                 "Arn": f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:user/dry-run",
                                 "UserId": "DRYRUN"}
        if model.name == "ListBuckets":
            return _Answered(), {"Buckets": [{"Name": bucket, "CreationDate": datetime.datetime(2020, 1, 1)}]}
        return _Answered(), {"ETag": '"0"'} if model.name in ("PutObject", "UploadPart") else {}

    session.events.register("before-call", answer)
    return session


@contextlib.contextmanager
def _role_unchecked():
    """The SDK checks the role with IAM calls, which a dry run does not make (its switch for that)."""
    before = os.environ.get("SAGEMAKER_VALIDATE_ROLE")
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SAGEMAKER_VALIDATE_ROLE", None)
        else:
            os.environ["SAGEMAKER_VALIDATE_ROLE"] = before


def offline_aws(spec: JobSpec, operation: str):
    """`remote.Aws` for `spec` on an offline session: its role (else $SAGEMAKER_ROLE) and bucket, else placeholders."""
    from sagemaker.core.helper.session_helper import Session

    from launch.jobs.remote import Aws

    role = spec.role or os.environ.get("SAGEMAKER_ROLE") or PLACEHOLDER_ROLE
    spec = spec.with_(role=role, bucket=spec.bucket or placeholder_bucket(spec.region))
    if spec.resume is not None and spec.resume_checkpoint_s3_uri is None:
        # A real submission reads it from the resumed job's description; offline it follows from the name.
        spec = spec.with_(resume_checkpoint_s3_uri=spec.checkpoint_s3_uri)
    boto_session = _offline_session(spec.region, spec.bucket, operation)
    session = Session(boto_session=boto_session, default_bucket=spec.bucket, default_bucket_prefix=spec.prefix)
    return Aws(boto_session=boto_session, session=session, spec=spec)


def training_job(spec: JobSpec) -> dict:
    """The CreateTrainingJob request `remote.submit` would send for `spec` (no data upload, no AWS call)."""
    from launch.jobs import code, remote

    aws = offline_aws(spec, "CreateTrainingJob")
    with _role_unchecked(), tempfile.TemporaryDirectory(prefix="titanic-code-") as tmp:
        trainer = remote.build_trainer(aws, code.stage(Path(tmp), wheelhouse=aws.spec.uses_wheelhouse))
        try:
            trainer.train(input_data_config=remote.input_data(aws.spec), wait=False, logs=False)
        except _Captured as captured:
            return captured.request
    raise RuntimeError("the SDK returned without sending CreateTrainingJob")


def tuning_job(spec: JobSpec, plan) -> dict:
    """The CreateHyperParameterTuningJob request `tuner.submit` would send (no data upload, no AWS call)."""
    from launch.jobs import code, remote
    from launch.tuning import tuner
    from launch.tuning.result import tuning_name

    aws = offline_aws(spec, "CreateHyperParameterTuningJob")
    name = tuning_name()
    with _role_unchecked(), tempfile.TemporaryDirectory(prefix="titanic-code-") as tmp:
        staged = code.stage(Path(tmp), wheelhouse=aws.spec.uses_wheelhouse)
        trainer = remote.build_trainer(aws, staged)
        channels = tuner.trial_channels(trainer, aws.spec, staged, name)
        try:
            tuner.build_tuner(trainer, plan).tune(inputs=channels, job_name=name, wait=False)
        except _Captured as captured:
            return captured.request
    raise RuntimeError("the SDK returned without sending CreateHyperParameterTuningJob")

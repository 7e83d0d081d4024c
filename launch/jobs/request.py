"""The exact request the SDK would send to create a job, built by the SDK itself with no AWS call.

The real submission path (`remote.build_trainer`, `ModelTrainer.train`, the tuner's `tune`) runs on a
boto3 session whose every call is answered here through botocore's `before-call` event: uploads succeed
without sending a byte, and the create call is stopped once botocore has validated and serialized it.
Its JSON body is what SageMaker would receive (`aws sagemaker create-training-job --cli-input-json` takes it).
Where no role or bucket is given, they are placeholders that still match the service's patterns.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from launch.jobs import code, remote
from launch.jobs.checks import check_role
from launch.jobs.spec import JobSpec

PLACEHOLDER_ACCOUNT = "000000000000"
PLACEHOLDER_ROLE = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/YOUR-SAGEMAKER-EXECUTION-ROLE"


def placeholder_bucket(region: str) -> str:
    """The SDK's default bucket name for the placeholder account."""
    return f"sagemaker-{region}-{PLACEHOLDER_ACCOUNT}"


class _Captured(Exception):
    """Carries the request body that was about to be sent (its one argument)."""


# The HTTP half of a response botocore takes from a `before-call` handler.
_ANSWERED = SimpleNamespace(status_code=200, headers={}, content=b"")


def _offline_session(region: str, bucket: str, operation: str):
    """A boto3 session whose calls never leave the process, answered as for an account that owns
    `bucket`; `operation` (sagemaker) raises `_Captured`."""
    import boto3

    session = boto3.Session(region_name=region, aws_access_key_id="DRY-RUN-NOT-A-KEY",
                            aws_secret_access_key="DRY-RUN-NOT-A-SECRET")

    def answer(model, params, **_):
        if model.service_model.service_name == "sagemaker" and model.name == operation:
            raise _Captured(json.loads(params["body"]))
        if model.name == "GetCallerIdentity":
            arn = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:user/dry-run"
            return _ANSWERED, {"Account": PLACEHOLDER_ACCOUNT, "Arn": arn, "UserId": "DRYRUN"}
        if model.name == "ListBuckets":
            return _ANSWERED, {"Buckets": [{"Name": bucket, "CreationDate": datetime.datetime(2020, 1, 1)}]}
        return _ANSWERED, {"ETag": '"0"'} if model.name in ("PutObject", "UploadPart") else {}

    session.events.register("before-call", answer)
    return session


def _request(spec: JobSpec, operation: str, create) -> dict:
    """The `operation` request that `create(aws, staged_code, trainer)` sends, on an offline session for
    `spec` with its role (else $SAGEMAKER_ROLE) and bucket, else placeholders."""
    from sagemaker.core.helper.session_helper import Session

    role = spec.role or os.environ.get("SAGEMAKER_ROLE")
    role = check_role(role, "--role" if spec.role else "SAGEMAKER_ROLE") if role else PLACEHOLDER_ROLE
    spec = dataclasses.replace(spec, role=role, bucket=spec.bucket or placeholder_bucket(spec.region))
    if spec.resume is not None and spec.resume_checkpoint_s3_uri is None:
        # A real submission reads it from the resumed job's description; offline it follows from the name.
        spec = dataclasses.replace(spec, resume_checkpoint_s3_uri=spec.checkpoint_s3_uri)
    boto_session = _offline_session(spec.region, spec.bucket, operation)
    session = Session(boto_session=boto_session, default_bucket=spec.bucket, default_bucket_prefix=spec.prefix)
    aws = remote.Aws(boto_session=boto_session, session=session, spec=spec)
    # The SDK checks the role with IAM calls, which a dry run does not make: this is its switch for that.
    with (mock.patch.dict(os.environ, {"SAGEMAKER_VALIDATE_ROLE": "false"}),
          tempfile.TemporaryDirectory(prefix="titanic-code-") as tmp):
        staged = code.stage(Path(tmp), wheelhouse=spec.uses_wheelhouse)
        try:
            create(aws, staged, remote.build_trainer(aws, staged))
        except _Captured as captured:
            return captured.args[0]
    raise RuntimeError(f"the SDK returned without sending {operation}")


def training_job(spec: JobSpec) -> dict:
    """The CreateTrainingJob request `remote.submit` would send for `spec` (no data upload, no AWS call)."""
    def create(aws, staged, trainer):
        trainer.train(input_data_config=remote.input_data(aws.spec), wait=False, logs=False)

    return _request(spec, "CreateTrainingJob", create)


def tuning_job(spec: JobSpec, plan) -> dict:
    """The CreateHyperParameterTuningJob request `tuner.submit` would send (no data upload, no AWS call)."""
    from launch.tuning import tuner
    from launch.tuning.result import tuning_name

    name = tuning_name()

    def create(aws, staged, trainer):
        channels = tuner.trial_channels(trainer, aws.spec, staged, name)
        tuner.build_tuner(trainer, plan).tune(inputs=channels, job_name=name, wait=False)

    return _request(spec, "CreateHyperParameterTuningJob", create)

"""The job's values checked offline, each a one-line UsageError naming the flag at fault;
`build_spec` turns the command line's job options into a `JobSpec`."""

from __future__ import annotations

import dataclasses
import json
import re

from launch.jobs import instances
from launch.jobs.spec import DEFAULT_MAX_RUN_S, DEFAULT_PREFIX, DEFAULT_REGION, JobSpec
from titanic_lightning.errors import UsageError
from titanic_lightning.sagemaker_facts import LONGEST_JOB_S

HP_VALUE_LIMIT = 2500  # SageMaker's limit on one hyperparameter value
# More instances than this is refused as a likely typo: with about 700 training rows and batches of 32, twenty
# instances already leave each process one batch per epoch, and `--local` runs every instance on this machine.
MAX_INSTANCE_COUNT = 20
# Printable ASCII except ' and \. The SDK's container driver writes each value into sm_training.env as `export
# SM_HP_<KEY>='<value>'` (and inside JSON), and its sm_train.sh sources that file: a ' would end the quoting and run
# the rest as shell code on every host, a newline break the file's lines, a \ let JSON escapes (\u0027, \n) smuggle either in.
_HP_VALUE = re.compile(r"[ -&(-\[\]-~]*")
_BUCKET = re.compile(r"^(?!xn--)(?!sthree-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_HP_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # CreateTrainingJob's TrainingJobName pattern


def entry_flags() -> set[str]:
    """The flags `python -m entry.train` accepts, from its configuration dataclass."""
    from titanic_lightning.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


def parse_hyperparameters(pairs: list[str], strategy: str | None = None) -> dict[str, str]:
    """`key=value` strings → {key: value}: keys must be the entry's flags, values what it accepts."""
    known = entry_flags() - {"debug"}
    hps: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise UsageError(f"--hp {pair}: expected key=value, e.g. --hp epochs=200")
        if not _HP_KEY.match(key) or key not in known:
            raise UsageError(f"--hp {pair}: {key!r} is not a flag of entry/train.py; choose from {', '.join(sorted(known))}")
        hps[key] = check_hyperparameter(key, value, f"--hp {pair}")
    if strategy is not None:
        hps["strategy"] = check_hyperparameter("strategy", strategy, f"--strategy {strategy}")
    return hps


def container_forms(value: str) -> tuple[str, str]:
    """How the SDK's container driver hands a hyperparameter over, with its own functions: the string in
    SM_HP_<KEY> and on the entry's command line, and its JSON inside SM_HPS and SM_TRAINING_ENV.
    Each value is decoded as JSON when it can be (`1e-3` arrives as `0.001`, `1e400` as `Infinity`)."""
    from sagemaker.train.container_drivers.common.utils import safe_deserialize, safe_serialize

    decoded = safe_deserialize(value)
    return safe_serialize(decoded), json.dumps(decoded)


def check_carried(value: str, source: str) -> str:
    """`value` when the container can carry it intact through sm_training.env; else a UsageError."""
    if len(value) > HP_VALUE_LIMIT:
        raise UsageError(f"{source}: longer than SageMaker's {HP_VALUE_LIMIT} characters")
    bad = [c for c in value if not _HP_VALUE.fullmatch(c)]
    arrives, in_json = container_forms(value)
    if bad or not _HP_VALUE.fullmatch(arrives) or not _HP_VALUE.fullmatch(in_json):
        shown = ", ".join(sorted({repr(c) for c in bad})) or "an escape that decodes to one"
        raise UsageError(f"{source}: holds {shown}; a hyperparameter value may hold printable ASCII characters other "
                         "than ' and \\ (the job's container writes it between single quotes into a shell file)")
    return value


def check_hyperparameter(key: str, value: str, source: str) -> str:
    """`value` when it reaches the entry intact and the entry accepts it; else a UsageError naming `source`."""
    check_carried(value, source)
    arrives = container_forms(value)[0]
    from titanic_lightning.config import parse_train_args

    try:
        parse_train_args([f"--{key}", arrives])
    except UsageError as exc:
        shown = "" if arrives == value else f" (the job's container passes it as {arrives})"
        raise UsageError(f"{source}{shown}: {exc}") from None
    return value


def check_role(role: str, source: str) -> str:
    if not _ROLE.match(role):
        raise UsageError(f"{source} {role}: not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    return role


def check_job_name(name: str, source: str) -> str:
    if not isinstance(name, str) or not JOB_NAME.match(name):
        raise UsageError(f"{source}: not a training job name (letters, digits and hyphens, at most 63 characters)")
    return name


def build_spec(*, gpu: bool = False, instance_type: str | None = None, instance_count: int = 1, spot: bool = False,
               max_run: int = DEFAULT_MAX_RUN_S, bucket: str | None = None, prefix: str = DEFAULT_PREFIX,
               region: str = DEFAULT_REGION, role: str | None = None, hp: list[str] | None = None,
               strategy: str | None = None, resume: str | None = None, network_isolation: bool = False,
               wheelhouse: bool = False) -> JobSpec:
    """Validate the command line's job options (offline) and return the spec."""
    chosen = instance_type or (instances.DEFAULT_GPU_INSTANCE if gpu else instances.DEFAULT_CPU_INSTANCE)
    instances.check(chosen)
    if gpu and instances.gpus(chosen) == 0:
        raise UsageError(f"--gpu with --instance-type {chosen}: that type has no GPU; drop --gpu or pick a GPU type "
                         f"such as {instances.DEFAULT_GPU_INSTANCE}")
    if instance_count < 1:
        raise UsageError(f"--instance-count {instance_count}: must be at least 1")
    if instance_count > MAX_INSTANCE_COUNT:
        raise UsageError(f"--instance-count {instance_count}: at most {MAX_INSTANCE_COUNT} (the data is too small "
                         "to give more instances work)")
    if max_run < 60:
        raise UsageError(f"--max-run {max_run}: must be at least 60 seconds")
    if max_run > LONGEST_JOB_S:
        raise UsageError(f"--max-run {max_run}: SageMaker runs a job for at most {LONGEST_JOB_S} seconds (28 days)")
    try:  # a region the SDK's table has the PyTorch training image for (offline)
        JobSpec(instance_type=chosen, region=region).image_uri()
    except ValueError as exc:
        if "region" not in str(exc).lower():
            raise
        known = str(exc).partition("Supported region(s):")[2].strip().rstrip(".")
        raise UsageError(f"--region {region!r}: not a region SageMaker's PyTorch training image is known in"
                         f"{'; choose from ' + known if known else ''}") from None
    if bucket is not None and not _BUCKET.match(bucket):
        raise UsageError(f"--bucket {bucket}: not a valid S3 bucket name (3-63 characters: lowercase letters, digits, "
                         "dots and hyphens, starting and ending with a letter or digit)")
    cleaned = prefix.strip("/")
    if (not cleaned or any(c in cleaned for c in "\\{}^%`[]\"<>~#|") or "//" in cleaned or ".." in cleaned
            or any(c.isspace() or not c.isprintable() for c in cleaned)):
        raise UsageError(f"--prefix {prefix!r}: use a plain S3 key prefix such as {DEFAULT_PREFIX} "
                         "(no '..', whitespace, control characters or any of \\{}^%`[]\"<>~#|)")
    return JobSpec(
        instance_type=chosen, instance_count=instance_count, gpu=gpu or instances.gpus(chosen) > 0, spot=spot,
        max_run_s=max_run, bucket=bucket, prefix=cleaned, region=region, role=role,
        hyperparameters=parse_hyperparameters(hp or [], strategy),
        resume=check_job_name(resume, f"--resume {resume}") if resume is not None else None,
        network_isolation=network_isolation, wheelhouse=wheelhouse,
    )

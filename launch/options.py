"""The job flags `submit.py` and `tune.py` share (so a tuning trial runs exactly what `submit.py` would
with the same flags), the `JobSpec` they describe, and the checks of the Python API's arguments for them."""

from __future__ import annotations

import argparse
import json
import os

from launch.console import path
from launch.jobs import checks
from launch.jobs.spec import DEFAULT_MAX_RUN_S, DEFAULT_PREFIX, DEFAULT_REGION
from titanic_lightning.errors import UsageError


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def add_job_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe one training job: instances, spot, S3, role, region, data, hyperparameters."""
    p.add_argument("--gpu", action="store_true", help="train on a GPU instance (default ml.g4dn.xlarge)")
    p.add_argument("--instance-type", help="ml.* instance type (default ml.m5.large, or ml.g4dn.xlarge with --gpu)")
    p.add_argument("--instance-count", type=integer, default=1, help="instances; more than one trains with torchrun")
    p.add_argument("--spot", action="store_true", help="managed spot training (max wait = 2 x max run)")
    p.add_argument("--max-run", type=integer, default=DEFAULT_MAX_RUN_S, metavar="SECONDS",
                   help=f"maximum run time (default {DEFAULT_MAX_RUN_S})")
    p.add_argument("--bucket", help="S3 bucket (default: the SageMaker session's default bucket)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"S3 key prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--role", help="IAM role ARN for the job (default $SAGEMAKER_ROLE, or the execution role in SageMaker)")
    p.add_argument("--region", help="AWS region (default: the AWS configuration's)")
    p.add_argument("--data", type=path, default="data", metavar="DIR",
                   help="folder with {train,val,test}_data.npz, prepared from the Titanic CSV if missing (default data)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="a flag of entry/train.py, passed as a hyperparameter; repeatable")
    p.add_argument("--strategy", metavar="NAME",
                   help="the entry's --strategy (auto, ddp, ddp_smddp, fsdp, tensor_parallel, pkg.mod:fn)")
    p.add_argument("--wheelhouse", action="store_true",
                   help="install the job's requirements from a wheels channel uploaded beside the code (built "
                        "once, cached, skipped when unchanged) instead of from the public index at start-up")
    p.add_argument("--network-isolation", action="store_true",
                   help="run the container with no network access (implies --wheelhouse); SageMaker still "
                        "moves the channels, checkpoints and model")


def region_or_default(region: str | None) -> str:
    """The region given, else $AWS_REGION, else $AWS_DEFAULT_REGION, else us-east-1."""
    return region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def spec_from_args(args, **extra):
    """The validated `JobSpec` the job flags describe (offline); `extra` passes further `build_spec` options."""
    return checks.build_spec(
        gpu=args.gpu, instance_type=args.instance_type, instance_count=args.instance_count, spot=args.spot,
        max_run=args.max_run, bucket=args.bucket, prefix=args.prefix, region=region_or_default(args.region), role=args.role,
        hp=args.hp, strategy=args.strategy, network_isolation=args.network_isolation, wheelhouse=args.wheelhouse, **extra)


def check_type(function: str, name: str, value, kinds: tuple[type, ...], what: str, optional: bool = False) -> None:
    """A Python API argument of the wrong type: a UsageError `function(name=value): expected what`."""
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise UsageError(f"{function}({name}={value!r}): expected {what}")


def hp_value(key: str, value, function: str = "job_spec") -> str:
    """A hyperparameter as the command line's `--hp key=value` would give it: strings as they are,
    anything else as JSON (`True` → true, `[64, 32]` → [64, 32], `1e-3` → 0.001)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise UsageError(f"{function}(hyperparameters={{{key!r}: {value!r}}}): not a string, number, boolean or list") from None


def hp_pairs(function: str, hyperparameters) -> list[str]:
    """`hyperparameters` (a dict, or `--hp` strings) as the command line's `key=value` pairs."""
    if hyperparameters is None:
        return []
    if isinstance(hyperparameters, dict):
        bad = [k for k in hyperparameters if not isinstance(k, str)]
        if bad:
            raise UsageError(f"{function}(hyperparameters=...): key {bad[0]!r} is not a flag name (a string)")
        return [f"{k}={hp_value(k, v, function)}" for k, v in hyperparameters.items()]
    if isinstance(hyperparameters, (list, tuple)) and all(isinstance(p, str) for p in hyperparameters):
        return list(hyperparameters)
    raise UsageError(f"{function}(hyperparameters={hyperparameters!r}): expected a dict such as "
                     '{"epochs": 20} or a list such as ["epochs=20"]')

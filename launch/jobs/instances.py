"""The ml.* training instance types this launcher knows, with their GPUs per instance: the count
decides the distribution and whether `--gpu` fits; an unknown type is refused rather than guessed."""

from __future__ import annotations

from titanic_lightning.errors import UsageError

# GPUs per instance, from the SageMaker instance-type documentation.
INSTANCES: dict[str, int] = {
    "ml.m5.large": 0, "ml.m5.xlarge": 0, "ml.m5.2xlarge": 0, "ml.m5.4xlarge": 0, "ml.m5.12xlarge": 0, "ml.m5.24xlarge": 0,
    "ml.c5.xlarge": 0, "ml.c5.2xlarge": 0, "ml.c5.4xlarge": 0, "ml.c5.9xlarge": 0, "ml.c5.18xlarge": 0,
    "ml.g4dn.xlarge": 1, "ml.g4dn.2xlarge": 1, "ml.g4dn.4xlarge": 1, "ml.g4dn.8xlarge": 1, "ml.g4dn.12xlarge": 4,
    "ml.g4dn.16xlarge": 1,
    "ml.g5.xlarge": 1, "ml.g5.2xlarge": 1, "ml.g5.4xlarge": 1, "ml.g5.8xlarge": 1, "ml.g5.12xlarge": 4,
    "ml.g5.16xlarge": 1, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.p3.2xlarge": 1, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8,
}
DEFAULT_CPU_INSTANCE = "ml.m5.large"
DEFAULT_GPU_INSTANCE = "ml.g4dn.xlarge"


def gpus(instance_type: str) -> int:
    return INSTANCES[check(instance_type)]


def check(instance_type: str) -> str:
    if instance_type not in INSTANCES:
        raise UsageError(f"--instance-type {instance_type}: unknown instance type; use one of {', '.join(sorted(INSTANCES))}")
    return instance_type

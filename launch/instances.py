"""The ml.* training instance types this launcher knows: vCPUs and GPUs per instance.

The GPU count decides the distribution (more than one GPU on an instance means torchrun with one
process per GPU) and whether `--gpu` fits the type; an unknown type is refused rather than guessed.
"""

from __future__ import annotations

from titanic_lightning.errors import UsageError

# (vCPUs, GPUs) per instance, from the SageMaker instance-type documentation.
INSTANCES: dict[str, tuple[int, int]] = {
    "ml.m5.large": (2, 0),
    "ml.m5.xlarge": (4, 0),
    "ml.m5.2xlarge": (8, 0),
    "ml.m5.4xlarge": (16, 0),
    "ml.m5.12xlarge": (48, 0),
    "ml.m5.24xlarge": (96, 0),
    "ml.c5.xlarge": (4, 0),
    "ml.c5.2xlarge": (8, 0),
    "ml.c5.4xlarge": (16, 0),
    "ml.c5.9xlarge": (36, 0),
    "ml.c5.18xlarge": (72, 0),
    "ml.g4dn.xlarge": (4, 1),
    "ml.g4dn.2xlarge": (8, 1),
    "ml.g4dn.4xlarge": (16, 1),
    "ml.g4dn.8xlarge": (32, 1),
    "ml.g4dn.12xlarge": (48, 4),
    "ml.g4dn.16xlarge": (64, 1),
    "ml.g5.xlarge": (4, 1),
    "ml.g5.2xlarge": (8, 1),
    "ml.g5.4xlarge": (16, 1),
    "ml.g5.8xlarge": (32, 1),
    "ml.g5.12xlarge": (48, 4),
    "ml.g5.16xlarge": (64, 1),
    "ml.g5.24xlarge": (96, 4),
    "ml.g5.48xlarge": (192, 8),
    "ml.p3.2xlarge": (8, 1),
    "ml.p3.8xlarge": (32, 4),
    "ml.p3.16xlarge": (64, 8),
}

DEFAULT_CPU_INSTANCE = "ml.m5.large"
DEFAULT_GPU_INSTANCE = "ml.g4dn.xlarge"


def gpus(instance_type: str) -> int:
    return INSTANCES[check(instance_type)][1]


def vcpus(instance_type: str) -> int:
    return INSTANCES[check(instance_type)][0]


def check(instance_type: str) -> str:
    if instance_type not in INSTANCES:
        raise UsageError(
            f"--instance-type {instance_type}: unknown instance type; use one of "
            f"{', '.join(sorted(INSTANCES))}"
        )
    return instance_type

"""The job specification shared by `--dry-run`, a SageMaker submission and `--local`, so all three run
the same hyperparameters, channels and distribution. Nothing here calls AWS."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from launch.jobs import code, instances, wheelhouse
from titanic_lightning.contracts import EPOCH_METRICS, FINAL_METRICS, PROJECT, SPLITS
from titanic_lightning.sagemaker_facts import OUTPUT_DIR

DEFAULT_PREFIX = PROJECT
DEFAULT_MAX_RUN_S = 3600
DEFAULT_REGION = "us-east-1"
FRAMEWORK_VERSION = "2.8"  # inside Lightning 2.6's supported torch range; its images are py312
PY_VERSION = "py312"
TENSORBOARD_LOCAL_PATH = f"{OUTPUT_DIR}/data/tensorboard"  # where the entry writes TensorBoard logs
BILLING_PLACEHOLDER_BUCKET = "<session-default-bucket>"
JOB_NAME_PLACEHOLDER = "<job-name>"  # the SDK names the job when it creates it
ROLE_PLACEHOLDER = "<execution-role-arn>"

# A number as the entry prints it (`{v:.4f}`), with room for exponents and signs.
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def _metric(name: str, final: bool = False) -> dict[str, str]:
    # \b keeps `val_loss` from matching inside a longer key; the final line starts with `final: `.
    return {"Name": name, "Regex": (r"final: .*\b" if final else r"\b") + f"{name}={_NUMBER};"}


# Per-epoch metrics come from the `epoch=...;` lines (the final line repeats val_* on the best
# weights, which SageMaker then records last); test_* exist only on the `final:` line.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "epoch", "Regex": r"\bepoch=([0-9]+);"},
    *(_metric(name) for name in EPOCH_METRICS),
    _metric("best_epoch", final=True),
    *(_metric(name, final=True) for name in FINAL_METRICS if name not in EPOCH_METRICS),
]

# The SDK's unique names: `<base job name>-<YYYYmmddHHMMSS>` (the emulator adds 4 random hex digits).
_UNIQUE_NAME = re.compile(r"^(?P<base>.+)-\d{14}(-[0-9a-f]{4})?$")


@dataclass(frozen=True)
class JobSpec:
    instance_type: str
    instance_count: int = 1
    gpu: bool = False
    spot: bool = False
    max_run_s: int = DEFAULT_MAX_RUN_S
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    region: str = DEFAULT_REGION
    role: str | None = None
    hyperparameters: dict[str, str] = field(default_factory=dict)  # all strings, as SageMaker passes them
    resume: str | None = None  # the job whose checkpoints this one continues from
    resume_checkpoint_s3_uri: str | None = None  # that job's checkpoint URI, as AWS describes it
    network_isolation: bool = False  # SageMaker still syncs checkpoints, TensorBoard logs and the model
    wheelhouse: bool = False  # install the requirements from a wheels channel, with no index

    @property
    def distributed(self) -> bool:
        """torchrun when processes must cooperate across instances or GPUs; else one plain process."""
        return self.instance_count > 1 or instances.gpus(self.instance_type) > 1

    @property
    def process_count_per_node(self) -> int | None:
        """torchrun's processes per instance; None for the driver's default (one per GPU, else one). Tensor
        parallelism on CPU splits each layer among `cpu_processes` processes, so torchrun starts that many."""
        if (self.distributed and instances.gpus(self.instance_type) == 0
                and self.hyperparameters.get("strategy") == "tensor_parallel"):
            return int(self.hyperparameters.get("cpu_processes", "1"))
        return None

    @property
    def base_job_name(self) -> str:
        # Per configuration; the SDK appends a timestamp to name each job.
        kind = self.instance_type.removeprefix("ml.").replace(".", "-")
        return f"{PROJECT}-{kind}-x{self.instance_count}{'-spot' if self.spot else ''}"

    @property
    def max_wait_s(self) -> int | None:
        # Spot waits for capacity as well as running; SageMaker wants max wait ≥ max run.
        return 2 * self.max_run_s if self.spot else None

    def _s3(self, *parts: str) -> str:
        path = "/".join(p.strip("/") for p in (self.prefix, *parts) if p)
        return f"s3://{self.bucket or BILLING_PLACEHOLDER_BUCKET}/{path}/"

    @property
    def uses_wheelhouse(self) -> bool:
        """An isolated container cannot reach a package index: it installs from the wheelhouse."""
        return self.wheelhouse or self.network_isolation

    @property
    def channels(self) -> dict[str, str]:
        """`train` (with preprocessing.json), `val`, `test` under `s3://B/P/data/`; with a wheelhouse,
        `wheels` under `s3://B/P/wheels/<key>/`, the key that of this job's requirements on the image."""
        data = {name: self._s3("data", name) for name in SPLITS}
        if self.uses_wheelhouse:
            key = wheelhouse.key(code.requirements(), wheelhouse.Target.image(PY_VERSION))
            data[wheelhouse.CHANNEL] = self._s3(wheelhouse.CHANNEL, key)
        return data

    def job_checkpoint_s3_uri(self, job_name: str) -> str:
        """Where the SDK keeps the checkpoints of `job_name` when CheckpointConfig names no URI:
        `s3://B/P/<base job name>/<job name>/checkpoints` (a spot restart gets the same one back)."""
        if job_name == JOB_NAME_PLACEHOLDER:
            base = self.base_job_name
        else:
            match = _UNIQUE_NAME.match(job_name)
            base = match["base"] if match else f"<base job name of {job_name}>"
        return self._s3(base, job_name, "checkpoints").removesuffix("/")

    def job_input_s3_uri(self, job_name: str, channel: str) -> str:
        """Where the SDK uploads a local folder given as channel `channel` of `job_name` (a training or
        tuning job): `s3://B/P/<base job name>/<job name>/input/<channel>`."""
        return self._s3(self.base_job_name, job_name, "input", channel).removesuffix("/")

    @property
    def checkpoint_s3_uri(self) -> str:
        """This job's own checkpoint URI; with `resume`, the resumed job's (so it restores them)."""
        if self.resume is None:
            return self.job_checkpoint_s3_uri(JOB_NAME_PLACEHOLDER)
        return self.resume_checkpoint_s3_uri or self.job_checkpoint_s3_uri(self.resume)

    @property
    def output_s3_uri(self) -> str:
        return self._s3("output")

    @property
    def tensorboard_s3_uri(self) -> str:
        return self._s3("tensorboard", self.base_job_name)

    @property
    def stopping_condition(self) -> dict[str, int]:
        wait = {} if self.max_wait_s is None else {"MaxWaitTimeInSeconds": self.max_wait_s}
        return {"MaxRuntimeInSeconds": self.max_run_s, **wait}

    @property
    def tags(self) -> dict[str, str]:
        return {"project": PROJECT}

    def image_uri(self) -> str:
        """The PyTorch training image, resolved offline from the SDK's bundled image table."""
        from sagemaker.core import image_uris

        return image_uris.retrieve("pytorch", self.region, version=FRAMEWORK_VERSION, py_version=PY_VERSION,
                                   instance_type=self.instance_type, image_scope="training")

    def describe(self, hourly_usd: float | None) -> dict:
        """What `--dry-run` prints: the job as it would be submitted."""
        distributed = {"type": "torchrun", "process_count_per_node": self.process_count_per_node} if self.distributed else None
        hourly = None if hourly_usd is None else round(hourly_usd * self.instance_count, 4)
        return {
            "instance_type": self.instance_type, "instance_count": self.instance_count, "image_uri": self.image_uri(),
            "distributed": distributed, "hyperparameters": dict(self.hyperparameters), "channels": self.channels,
            "network_isolation": self.network_isolation, "wheelhouse": self.uses_wheelhouse,
            "metric_definitions": METRIC_DEFINITIONS, "stopping_condition": self.stopping_condition,
            "checkpoint_s3_uri": self.checkpoint_s3_uri, "resume": self.resume, "output_s3_uri": self.output_s3_uri,
            "tensorboard_s3_uri": self.tensorboard_s3_uri, "spot": self.spot, "estimated_usd_per_hour": hourly,
            "base_job_name": self.base_job_name, "region": self.region, "role": self.role or ROLE_PLACEHOLDER,
            "tags": self.tags,
        }

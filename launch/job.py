"""The job specification: one description of a training job, shared by `--dry-run`, a real
SageMaker submission and `--local`, so all three run the same hyperparameters, channels and
distribution.

Decisions made here:

* instance type: `--instance-type`, else ml.g4dn.xlarge with `--gpu`, else ml.m5.large;
* distribution: torchrun (`sagemaker.train.distributed.Torchrun`) when there is more than one
  instance or the instance has more than one GPU, one process per GPU (with `strategy=tensor_parallel`
  on CPU instances, `cpu_processes` per instance); otherwise the entry runs as one plain process;
* hyperparameters: `--hp key=value` (each key must be a flag of `python -m entry.train`) plus
  `--strategy`, all strings, as SageMaker passes them; each value is parsed here by the entry's own
  parser, in the form the container will hand it over, and must be carried safely (see
  `check_hyperparameter`);
* channels `train` (train_data.npz + preprocessing.json), `val`, `test` under `s3://B/P/data/`, and
  with a wheelhouse `wheels` under `s3://B/P/wheels/<key>/` (see `launch.wheelhouse`);
* network isolation (`--network-isolation`): the container reaches nothing but its channels, so it
  implies the wheelhouse; SageMaker itself still syncs checkpoints, TensorBoard logs and the model;
* metric definitions whose regexes read the entry's `name=value;` lines;
* stopping condition, TensorBoard and output paths;
* checkpoints: each job its own URI, the SDK's `s3://B/P/<base job name>/<job name>/checkpoints`
  (a spot restart of the job gets the same URI back); with `--resume JOB` the new job uses JOB's.

Nothing here calls AWS.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from launch import instances
from titanic_lightning.contracts import EPOCH_METRICS, FINAL_METRICS, PROJECT, SPLITS
from titanic_lightning.errors import UsageError
from titanic_lightning.sagemaker_facts import LONGEST_JOB_S, OUTPUT_DIR

DEFAULT_PREFIX = PROJECT
DEFAULT_MAX_RUN_S = 3600
DEFAULT_REGION = "us-east-1"
FRAMEWORK = "pytorch"
FRAMEWORK_VERSION = "2.8"  # inside Lightning 2.6's supported torch range; its images are py312
PY_VERSION = "py312"
# The entry writes TensorBoard logs under $SM_OUTPUT_DATA_DIR/tensorboard.
TENSORBOARD_LOCAL_PATH = f"{OUTPUT_DIR}/data/tensorboard"
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

# SageMaker's limit on one hyperparameter value.
HP_VALUE_LIMIT = 2500
# More instances than this is refused as a likely typo: with about 700 training rows and the default
# batch size of 32, twenty instances already leave each process one batch per epoch, and
# `--local` starts every instance as processes on this one machine.
MAX_INSTANCE_COUNT = 20
# What a hyperparameter value may hold: printable ASCII except the single quote and the backslash.
# The SDK's container driver writes every value into sm_training.env as `export SM_HP_<KEY>='<value>'`
# (and inside the JSON of SM_HPS and SM_TRAINING_ENV), and its sm_train.sh sources that file: a
# single quote would end the quoting and run the rest as shell code on every host, a newline would
# break the file's lines, and a backslash lets JSON escapes (\u0027, \n) smuggle either in.
_HP_VALUE = re.compile(r"[ -&(-\[\]-~]*")

# S3 bucket naming rules (general purpose buckets).
_BUCKET = re.compile(r"^(?!xn--)(?!sthree-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_HP_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
# CreateTrainingJob's TrainingJobName pattern.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
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
    hyperparameters: dict[str, str] = field(default_factory=dict)
    resume: str | None = None  # the job whose checkpoints this one continues from
    resume_checkpoint_s3_uri: str | None = None  # that job's checkpoint URI, as AWS describes it
    network_isolation: bool = False
    wheelhouse: bool = False  # install the requirements from a wheels channel, with no index

    @property
    def gpus_per_instance(self) -> int:
        return instances.gpus(self.instance_type)

    @property
    def distributed(self) -> bool:
        """torchrun when processes must cooperate across instances or GPUs."""
        return self.instance_count > 1 or self.gpus_per_instance > 1

    @property
    def process_count_per_node(self) -> int | None:
        """torchrun's processes per instance; None for the driver's default (one per GPU, else one).

        Tensor parallelism on CPU instances splits each layer among `cpu_processes` processes per
        instance, so torchrun must start that many (the entry's default tensor-parallel size).
        """
        if (self.distributed and self.gpus_per_instance == 0
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
        bucket = self.bucket or BILLING_PLACEHOLDER_BUCKET
        path = "/".join(p.strip("/") for p in (self.prefix, *parts) if p)
        return f"s3://{bucket}/{path}/"

    @property
    def uses_wheelhouse(self) -> bool:
        """An isolated container cannot reach a package index: it installs from the wheelhouse."""
        return self.wheelhouse or self.network_isolation

    @property
    def wheelhouse_key(self) -> str:
        """The wheelhouse this job's requirements need on the training image (offline)."""
        from launch import code, wheelhouse

        return wheelhouse.key(code.requirements(), wheelhouse.Target.image(PY_VERSION))

    @property
    def channels(self) -> dict[str, str]:
        data = {name: self._s3("data", name) for name in SPLITS}
        if self.uses_wheelhouse:
            from launch import wheelhouse

            data[wheelhouse.CHANNEL] = self._s3(wheelhouse.CHANNEL, self.wheelhouse_key)
        return data

    def job_checkpoint_s3_uri(self, job_name: str) -> str:
        """Where the SDK keeps the checkpoints of `job_name` when CheckpointConfig names no URI.

        Its layout, `s3://B/P/<base job name>/<job name>/checkpoints`, beside the job's uploaded
        code; the base is the name without the SDK's timestamp.
        """
        if job_name == JOB_NAME_PLACEHOLDER:
            base = self.base_job_name
        else:
            match = _UNIQUE_NAME.match(job_name)
            base = match["base"] if match else f"<base job name of {job_name}>"
        return self._s3(base, job_name, "checkpoints").removesuffix("/")

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
        out = {"MaxRuntimeInSeconds": self.max_run_s}
        if self.max_wait_s is not None:
            out["MaxWaitTimeInSeconds"] = self.max_wait_s
        return out

    @property
    def tags(self) -> dict[str, str]:
        return {"project": PROJECT}

    def image_uri(self) -> str:
        """The PyTorch training image, resolved offline from the SDK's bundled image table."""
        from sagemaker.core import image_uris

        return image_uris.retrieve(
            FRAMEWORK, self.region, version=FRAMEWORK_VERSION, py_version=PY_VERSION,
            instance_type=self.instance_type, image_scope="training",
        )

    def describe(self, hourly_usd: float | None) -> dict:
        """What `--dry-run` prints: the job as it would be submitted."""
        return {
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "image_uri": self.image_uri(),
            "distributed": ({"type": "torchrun", "process_count_per_node": self.process_count_per_node}
                            if self.distributed else None),
            "hyperparameters": dict(self.hyperparameters),
            "channels": self.channels,
            "network_isolation": self.network_isolation,
            "wheelhouse": self.uses_wheelhouse,
            "metric_definitions": METRIC_DEFINITIONS,
            "stopping_condition": self.stopping_condition,
            "checkpoint_s3_uri": self.checkpoint_s3_uri,
            "resume": self.resume,
            "output_s3_uri": self.output_s3_uri,
            "tensorboard_s3_uri": self.tensorboard_s3_uri,
            "spot": self.spot,
            "estimated_usd_per_hour": None if hourly_usd is None else round(hourly_usd * self.instance_count, 4),
            "base_job_name": self.base_job_name,
            "region": self.region,
            "role": self.role or ROLE_PLACEHOLDER,
            "tags": self.tags,
        }

    def with_(self, **changes) -> JobSpec:
        return dataclasses.replace(self, **changes)


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
    """How the SDK's container driver hands a hyperparameter over: the string in SM_HP_<KEY> and on
    the entry's command line, and its JSON inside SM_HPS and SM_TRAINING_ENV.

    The driver decodes each value as JSON when it can (so `1e-3` arrives as `0.001` and `1e400` as
    `Infinity`) and writes it back: these functions are its own.
    """
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
        raise UsageError(
            f"{source}: holds {shown}; a hyperparameter value may hold printable ASCII characters other "
            "than ' and \\ (the job's container writes it between single quotes into a shell file)"
        )
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


def check_bucket(bucket: str) -> str:
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"--bucket {bucket}: not a valid S3 bucket name (3-63 characters: lowercase letters, digits, "
            "dots and hyphens, starting and ending with a letter or digit)"
        )
    return bucket


def check_role(role: str, source: str) -> str:
    if not _ROLE.match(role):
        raise UsageError(f"{source} {role}: not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    return role


def check_job_name(name: str, flag: str) -> str:
    if not _JOB_NAME.match(name):
        raise UsageError(f"{flag} {name}: not a training job name (letters, digits and hyphens, at most 63 characters)")
    return name


def check_prefix(prefix: str) -> str:
    cleaned = prefix.strip("/")
    unsafe = (not cleaned or any(c in cleaned for c in "\\{}^%`[]\"<>~#|") or "//" in cleaned or ".." in cleaned
              or any(c.isspace() or not c.isprintable() for c in cleaned))
    if unsafe:
        raise UsageError(
            f"--prefix {prefix!r}: use a plain S3 key prefix such as {DEFAULT_PREFIX} "
            "(no '..', whitespace, control characters or any of \\{}^%`[]\"<>~#|)"
        )
    return cleaned


def check_region(region: str, instance_type: str) -> str:
    """A region the SDK's table has the PyTorch training image for (offline)."""
    from sagemaker.core import image_uris

    try:
        image_uris.retrieve(FRAMEWORK, region, version=FRAMEWORK_VERSION, py_version=PY_VERSION,
                            instance_type=instance_type, image_scope="training")
    except ValueError as exc:
        if "region" not in str(exc).lower():
            raise
        known = str(exc).partition("Supported region(s):")[2].strip().rstrip(".")
        raise UsageError(f"--region {region!r}: not a region SageMaker's PyTorch training image is known in"
                         f"{'; choose from ' + known if known else ''}") from None
    return region


def build_spec(
    *,
    gpu: bool = False,
    instance_type: str | None = None,
    instance_count: int = 1,
    spot: bool = False,
    max_run: int = DEFAULT_MAX_RUN_S,
    bucket: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    region: str = DEFAULT_REGION,
    role: str | None = None,
    hp: list[str] | None = None,
    strategy: str | None = None,
    resume: str | None = None,
    network_isolation: bool = False,
    wheelhouse: bool = False,
) -> JobSpec:
    """Validate the command line's job options (offline) and return the spec."""
    chosen = instance_type or (instances.DEFAULT_GPU_INSTANCE if gpu else instances.DEFAULT_CPU_INSTANCE)
    instances.check(chosen)
    if gpu and instances.gpus(chosen) == 0:
        raise UsageError(
            f"--gpu with --instance-type {chosen}: that type has no GPU; drop --gpu or pick a GPU type "
            f"such as {instances.DEFAULT_GPU_INSTANCE}"
        )
    if instance_count < 1:
        raise UsageError(f"--instance-count {instance_count}: must be at least 1")
    if instance_count > MAX_INSTANCE_COUNT:
        raise UsageError(f"--instance-count {instance_count}: at most {MAX_INSTANCE_COUNT} (the data is too small "
                         "to give more instances work)")
    if max_run < 60:
        raise UsageError(f"--max-run {max_run}: must be at least 60 seconds")
    if max_run > LONGEST_JOB_S:
        raise UsageError(f"--max-run {max_run}: SageMaker runs a job for at most {LONGEST_JOB_S} seconds (28 days)")
    check_region(region, chosen)
    return JobSpec(
        instance_type=chosen,
        instance_count=instance_count,
        gpu=gpu or instances.gpus(chosen) > 0,
        spot=spot,
        max_run_s=max_run,
        bucket=check_bucket(bucket) if bucket is not None else None,
        prefix=check_prefix(prefix),
        region=region,
        role=role,
        hyperparameters=parse_hyperparameters(hp or [], strategy),
        resume=check_job_name(resume, "--resume") if resume is not None else None,
        network_isolation=network_isolation,
        wheelhouse=wheelhouse,
    )

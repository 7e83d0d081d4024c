"""The one module that reads the process environment.

Everything the rest of the project needs from `os.environ` comes through here, as defaults that
command-line flags override:

* paths — SageMaker's `SM_CHANNEL_*`, `SM_MODEL_DIR`, `SM_OUTPUT_DATA_DIR`, `SM_OUTPUT_FAILURE`,
  else local folders (`./data/`, `./model/`, `./outputs/`); checkpoints in `TITANIC_CHECKPOINT_DIR`,
  else `/opt/ml/checkpoints` when it exists;
* the Titanic CSV — `TITANIC_CSV`, the user cache folder, the download URL;
* the training plan — who started this process (torchrun, a SageMaker host, or nobody: one
  detector each, as Lightning has one ClusterEnvironment per cluster) and so which accelerator, how
  many devices and nodes, which rank; then the command line's overrides, the strategy and backend.

`make_plan` is a pure function of an environment mapping, so it is tested with plain dicts.
Nothing here imports torch or Lightning: `--help` and argument errors stay instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from titanic_lightning import sagemaker_facts
from titanic_lightning.contracts import PROJECT, SPLITS, npz_name
from titanic_lightning.errors import UsageError

LOCAL_DATA_DIR = Path("data")
LOCAL_MODEL_DIR = Path("model")
LOCAL_OUTPUT_DIR = Path("outputs")
SAGEMAKER_CHECKPOINT_DIR = Path(sagemaker_facts.CHECKPOINT_DIR)
CHECKPOINT_DIR_VARIABLE = "TITANIC_CHECKPOINT_DIR"
SAGEMAKER_OUTPUT_DIR = Path(sagemaker_facts.OUTPUT_DIR)

# The pandas project's copy of the Kaggle training file, pinned to a commit; its hash is checked
# before the file is cached or used.
TITANIC_CSV_URL = (
    "https://raw.githubusercontent.com/pandas-dev/pandas/"
    "3106d68bee33c160adbc9322a523dab600a81a73/doc/data/titanic.csv"
)
TITANIC_CSV_SHA256 = "cd888141e6a2ca5906114d0b6a63d8a3e14edb3326f7bdd56327d14646b68c36"

# The strategy whose processes split the model's layers (titanic_lightning.strategies, .parallel).
TENSOR_PARALLEL = "tensor_parallel"

# PyTorch waits 30 minutes for a lost peer by default; a training job would bill for all of it.
DEFAULT_PROCESS_GROUP_TIMEOUT_S = 300


# The variables (by prefix) through which torchrun or a SageMaker host tells a process where it
# sits in a job. A process that must start a job of its own (a host of `launch/submit.py --local`,
# a test's training run) drops them, so it is not taken for a rank of its parent's job.
LAUNCHER_VARIABLES = ("SM_", "TORCHELASTIC", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                      "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "TRAINING_JOB_NAME")


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def without_launcher(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment without `LAUNCHER_VARIABLES`."""
    return {k: v for k, v in _env(env).items() if not k.startswith(LAUNCHER_VARIABLES)}


# --- paths -----------------------------------------------------------------------------------


def sagemaker_channels(env: Mapping[str, str] | None = None) -> dict[str, Path]:
    """The splits SageMaker mounted a channel for: {split: `SM_CHANNEL_<SPLIT>`}."""
    mounted = {}
    for split in SPLITS:
        value = _env(env).get(f"SM_CHANNEL_{split.upper()}")
        if value:
            mounted[split] = Path(value)
    return mounted


def default_channel(split: str, mounted: Mapping[str, Path]) -> Path:
    """The channel SageMaker mounted for the split (`sagemaker_channels`), else `./data/<split>_data.npz`."""
    return mounted.get(split) or LOCAL_DATA_DIR / npz_name(split)


def default_model_dir(env: Mapping[str, str] | None = None) -> Path:
    return Path(_env(env).get("SM_MODEL_DIR") or LOCAL_MODEL_DIR)


def default_output_dir(env: Mapping[str, str] | None = None) -> Path:
    return Path(_env(env).get("SM_OUTPUT_DATA_DIR") or LOCAL_OUTPUT_DIR)


def default_checkpoint_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """`TITANIC_CHECKPOINT_DIR`, else /opt/ml/checkpoints when it exists, else none.

    SageMaker syncs /opt/ml/checkpoints to S3 and restores it on a restart, but names it in no
    variable; the emulation (`launch/submit.py --local`) points each host at its own copy.
    """
    value = _env(env).get(CHECKPOINT_DIR_VARIABLE)
    if value:
        return Path(value)
    return SAGEMAKER_CHECKPOINT_DIR if SAGEMAKER_CHECKPOINT_DIR.is_dir() else None


def failure_file(env: Mapping[str, str] | None = None) -> Path | None:
    value = _env(env).get("SM_OUTPUT_FAILURE")
    if value:
        return Path(value)
    return SAGEMAKER_OUTPUT_DIR / "failure" if SAGEMAKER_OUTPUT_DIR.is_dir() else None


def write_failure_reason(message: str, env: Mapping[str, str] | None = None) -> None:
    """Put the reason where SageMaker reads a job's FailureReason (its first `FAILURE_REASON_LIMIT` characters)."""
    path = failure_file(env)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(message[:sagemaker_facts.FAILURE_REASON_LIMIT] + "\n")
    except OSError:
        pass  # reporting a failure must never cause another


def titanic_csv_from_env(env: Mapping[str, str] | None = None) -> Path | None:
    value = _env(env).get("TITANIC_CSV")
    return Path(value) if value else None


def titanic_csv_url(env: Mapping[str, str] | None = None) -> str:
    return _env(env).get("TITANIC_CSV_URL") or TITANIC_CSV_URL


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    e = _env(env)
    base = Path(e["XDG_CACHE_HOME"]) if e.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / PROJECT


def local_rank(env: Mapping[str, str] | None = None) -> int:
    return int(_env(env).get("LOCAL_RANK", 0))


def is_global_zero(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is (or, once its launcher's processes exist, will be) global rank 0: the
    one process of a run that writes the model and output folders. Read before Lightning starts,
    from whichever launcher set it: torchrun's `RANK`, SLURM's `SLURM_PROCID`, else a node rank
    (`NODE_RANK`, a SageMaker host's index) and `LOCAL_RANK` of 0."""
    e = _env(env)
    for key in ("RANK", "SLURM_PROCID"):
        if e.get(key, "").strip():
            return e[key].strip() == "0"
    if e.get("SM_HOSTS") and e.get("SM_CURRENT_HOST"):
        try:
            if _hosts(e).index(e["SM_CURRENT_HOST"]) != 0:
                return False
        except (UsageError, ValueError):
            pass  # reported with its name when the plan is made
    return e.get("NODE_RANK", "0").strip() in ("", "0") and e.get("LOCAL_RANK", "0").strip() in ("", "0")


# --- the training plan -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Where and how this process trains: what the Trainer and the strategy are built from."""

    launcher: str  # "torchrun" (processes exist), "sagemaker" (Lightning starts them), "local"
    accelerator: str  # "cpu" or "gpu"
    devices: int  # processes per node
    num_nodes: int
    node_rank: int
    strategy: str  # a name from titanic_lightning.strategies, or "package.module:factory"
    backend: str | None  # process-group backend; None for a single process
    main_address: str | None = None
    main_port: int | None = None
    process_group_timeout_s: int = DEFAULT_PROCESS_GROUP_TIMEOUT_S
    env_updates: dict[str, str] = field(default_factory=dict)
    tensor_parallel_size: int | None = None  # processes that split each layer (strategy tensor_parallel)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def data_parallel_size(self) -> int:
        """Processes that train on different batches: the world, less tensor parallelism's groups."""
        return self.world_size // (self.tensor_parallel_size or 1)


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key)
    if raw in (None, ""):
        if default is None:
            raise UsageError(f"environment variable {key} is required here but not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {key}={raw!r} is not an integer") from None


def _hosts(env: Mapping[str, str]) -> list[str]:
    try:
        hosts = json.loads(env["SM_HOSTS"])
    except (json.JSONDecodeError, TypeError):
        raise UsageError(f"environment variable SM_HOSTS={env['SM_HOSTS']!r} is not a JSON list of host names") from None
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise UsageError(f"environment variable SM_HOSTS={env['SM_HOSTS']!r} is not a JSON list of host names")
    return sorted(hosts)


# One detector per launcher, tried in order, as Lightning tries its ClusterEnvironment classes:
# `detect(env)` says whether this launcher started the process, `read(env, ...)` what its environment
# implies. A second cloud or SLURM is one more detector in DETECTORS, before the plain process.


@dataclass(frozen=True)
class Detected:
    """What a launcher's environment implies, before the command line's flags have their say."""

    launcher: str
    accelerator: str
    devices: int
    num_nodes: int
    node_rank: int = 0
    main_address: str | None = None
    main_port: int | None = None
    # Set when the launcher has started every process itself: the variable naming their number,
    # which flags may then not contradict.
    fixed_world_size: str | None = None


class Torchrun:
    """torchrun (or any torch.distributed elastic launcher): the processes exist, one per device."""

    name = "torchrun"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return "TORCHELASTIC_RUN_ID" in env or all(k in env for k in ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"))

    @classmethod
    def read(cls, env: Mapping[str, str], cuda_devices: int, cpu_processes: int) -> Detected:
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE", world)
        if local_world < 1 or world % local_world:
            raise UsageError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local_world}")
        return Detected(
            launcher=cls.name,
            accelerator="gpu" if cuda_devices > 0 else "cpu",
            devices=local_world,
            num_nodes=world // local_world,
            node_rank=_int(env, "GROUP_RANK", _int(env, "RANK", 0) // local_world),
            main_address=env.get("MASTER_ADDR"),
            main_port=_int(env, "MASTER_PORT", 29500),
            fixed_world_size=f"{cls.name}'s WORLD_SIZE",
        )


class SageMakerHost:
    """A SageMaker training host: one process per host from SageMaker, Lightning starts the rest."""

    name = "sagemaker"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return bool(env.get("SM_HOSTS"))

    @classmethod
    def read(cls, env: Mapping[str, str], cuda_devices: int, cpu_processes: int) -> Detected:
        hosts = _hosts(env)
        current = env.get("SM_CURRENT_HOST", hosts[0])
        if current not in hosts:
            raise UsageError(f"SM_CURRENT_HOST={current!r} is not one of SM_HOSTS={hosts}")
        gpus = _int(env, "SM_NUM_GPUS", cuda_devices)
        return Detected(
            launcher=cls.name,
            accelerator="gpu" if gpus > 0 else "cpu",
            devices=gpus if gpus > 0 else cpu_processes,
            num_nodes=len(hosts),
            node_rank=hosts.index(current),
            main_address=env.get("SM_MASTER_ADDR") or hosts[0],
            main_port=_int(env, "SM_MASTER_PORT", sagemaker_facts.MASTER_PORT),
        )


class PlainProcess:
    """Started by nobody in particular: one GPU when there is one, else `--cpu_processes`, one node."""

    name = "local"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        return True

    @classmethod
    def read(cls, env: Mapping[str, str], cuda_devices: int, cpu_processes: int) -> Detected:
        return Detected(
            launcher=cls.name,
            accelerator="gpu" if cuda_devices > 0 else "cpu",
            devices=1 if cuda_devices > 0 else cpu_processes,
            num_nodes=1,
        )


DETECTORS = (Torchrun, SageMakerHost, PlainProcess)  # the first that detects its launcher wins


def detect(env: Mapping[str, str], cuda_devices: int, cpu_processes: int = 1) -> Detected:
    """What the launcher that started this process implies (the first detector that recognises it)."""
    detector = next(d for d in DETECTORS if d.detect(env))
    return detector.read(env, cuda_devices, cpu_processes)


def is_sagemaker(env: Mapping[str, str] | None = None) -> bool:
    return SageMakerHost.detect(_env(env))


def socket_interface_updates(env: Mapping[str, str]) -> dict[str, str]:
    """GLOO/NCCL_SOCKET_IFNAME from SageMaker's SM_NETWORK_INTERFACE_NAME, for those not set already."""
    iface = env.get("SM_NETWORK_INTERFACE_NAME")
    if not iface:
        return {}
    return {key: iface for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if not env.get(key)}


def make_plan(
    env: Mapping[str, str],
    cuda_devices: int,
    *,
    accelerator: str | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    strategy: str | None = None,
    cpu_processes: int = 1,
    process_group_timeout_s: int = DEFAULT_PROCESS_GROUP_TIMEOUT_S,
    tensor_parallel_size: int | None = None,
) -> Plan:
    """Turn an environment (and the number of visible CUDA devices) into a training plan.

    The launcher's detector reads the environment; then the command line's `--accelerator`,
    `--devices`, `--num_nodes` and `--strategy` override what it implies. With strategy
    `tensor_parallel`, `--tensor_parallel_size` processes (default: those of a node) split each layer,
    and the world's remaining factor trains data parallel.
    """
    found = detect(env, cuda_devices, cpu_processes)
    chosen_accelerator = accelerator if accelerator not in (None, "auto") else found.accelerator
    if chosen_accelerator == "cuda":
        chosen_accelerator = "gpu"
    if chosen_accelerator == "gpu" and cuda_devices == 0:
        raise UsageError("--accelerator gpu was asked for, but no CUDA device is visible")
    chosen_devices = devices if devices is not None else found.devices
    chosen_nodes = num_nodes if num_nodes is not None else found.num_nodes
    world = chosen_devices * chosen_nodes
    if found.fixed_world_size and world != found.devices * found.num_nodes:
        raise UsageError(
            f"--devices {chosen_devices} x --num_nodes {chosen_nodes} does not match {found.fixed_world_size}="
            f"{found.devices * found.num_nodes}"
        )
    chosen_strategy = strategy if strategy not in (None, "auto") else ("ddp" if world > 1 else "auto")
    if tensor_parallel_size is not None and chosen_strategy != TENSOR_PARALLEL:
        raise UsageError(f"--tensor_parallel_size {tensor_parallel_size}: used only with --strategy {TENSOR_PARALLEL}")
    if chosen_strategy == TENSOR_PARALLEL:
        tensor_parallel_size = tensor_parallel_size or chosen_devices
        if world % tensor_parallel_size:
            raise UsageError(
                f"--tensor_parallel_size {tensor_parallel_size}: does not divide the {world} process(es) of this run "
                f"({chosen_devices} per node x {chosen_nodes} node(s)) into tensor-parallel groups"
            )
    backend = None
    if world > 1 or chosen_strategy not in ("auto",):
        backend = "nccl" if chosen_accelerator == "gpu" else "gloo"
    return Plan(
        launcher=found.launcher,
        accelerator=chosen_accelerator,
        devices=chosen_devices,
        num_nodes=chosen_nodes,
        node_rank=found.node_rank,
        strategy=chosen_strategy,
        backend=backend,
        main_address=found.main_address,
        main_port=found.main_port,
        process_group_timeout_s=process_group_timeout_s,
        env_updates=socket_interface_updates(env),
        tensor_parallel_size=tensor_parallel_size,
    )


def plan_from_environment(cuda_devices: int, **overrides) -> Plan:
    """`make_plan` for this process's own environment."""
    return make_plan(os.environ, cuda_devices, **overrides)


def apply_plan_environment(plan: Plan, env: MutableMapping[str, str] | None = None) -> None:
    """Export the socket-interface variables the plan chose (only those that were unset)."""
    target = os.environ if env is None else env
    for key, value in plan.env_updates.items():
        target.setdefault(key, value)

"""The one module that reads the process environment.

Everything the rest of the project needs from `os.environ` comes through here, as defaults that
command-line flags override:

* paths — SageMaker's `SM_CHANNEL_*`, `SM_MODEL_DIR`, `SM_OUTPUT_DATA_DIR`, `SM_OUTPUT_FAILURE`,
  else local folders (`./data/`, `./model/`, `./outputs/`); checkpoints in `TITANIC_CHECKPOINT_DIR`,
  else `/opt/ml/checkpoints` when it exists;
* the Titanic CSV — `TITANIC_CSV`, the user cache folder, the download URL;
* the values the training plan reads beside Lightning's cluster environments
  (`titanic_lightning.training.cluster`): SageMaker's hosts, integer variables, socket interfaces; and which
  process of a run is global rank 0, before Lightning starts.

Functions take an environment mapping (default `os.environ`), so they are tested with plain dicts.
Nothing here imports torch or Lightning: `--help` and argument errors stay instant.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
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

# The strategy whose processes split the model's layers (titanic_lightning.training.strategies, .parallel).
TENSOR_PARALLEL = "tensor_parallel"

# PyTorch waits 30 minutes for a lost peer by default; a training job would bill for all of it.
DEFAULT_PROCESS_GROUP_TIMEOUT_S = 300


# The variables (by prefix) through which torchrun or a SageMaker host tells a process where it
# sits in a job. A process that must start a job of its own (a host of `launch/submit.py --local`,
# a test's training run) drops them, so it is not taken for a rank of its parent's job.
LAUNCHER_VARIABLES = ("SM_", "SLURM_", "TORCHELASTIC", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
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
    from whichever launcher set it: torchrun's `RANK`, SLURM's `SLURM_PROCID` in an `srun` step,
    else a node rank (`NODE_RANK`, a SageMaker host's index) and `LOCAL_RANK` of 0."""
    e = _env(env)
    if e.get("RANK", "").strip():
        return e["RANK"].strip() == "0"
    if "SLURM_STEP_ID" in e and e.get("SLURM_PROCID", "").strip():
        return e["SLURM_PROCID"].strip() == "0"
    if e.get("SM_HOSTS") and e.get("SM_CURRENT_HOST"):
        try:
            if sagemaker_hosts(e).index(e["SM_CURRENT_HOST"]) != 0:
                return False
        except (UsageError, ValueError):
            pass  # reported with its name when the plan is made
    return e.get("NODE_RANK", "0").strip() in ("", "0") and e.get("LOCAL_RANK", "0").strip() in ("", "0")


# --- values the training plan is read from (titanic_lightning.training.cluster) ------------------------


def env_int(env: Mapping[str, str], key: str, default: int | None = None, leading: bool = False) -> int:
    """An integer variable, named in a one-line error when it is missing (without a default) or not
    an integer; `leading` reads the count at the start of SLURM's "2(x3)" form."""
    raw = env.get(key)
    if raw in (None, ""):
        if default is None:
            raise UsageError(f"environment variable {key} is required here but not set")
        return default
    try:
        return int(raw.split("(")[0] if leading else raw)
    except ValueError:
        raise UsageError(f"environment variable {key}={raw!r} is not an integer") from None


def sagemaker_hosts(env: Mapping[str, str]) -> list[str]:
    """SageMaker's `SM_HOSTS`, sorted (the node ranks' order)."""
    try:
        hosts = json.loads(env["SM_HOSTS"])
    except (json.JSONDecodeError, TypeError):
        hosts = None
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise UsageError(f"environment variable SM_HOSTS={env['SM_HOSTS']!r} is not a JSON list of host names")
    return sorted(hosts)


def socket_interface_updates(env: Mapping[str, str]) -> dict[str, str]:
    """GLOO/NCCL_SOCKET_IFNAME from SageMaker's SM_NETWORK_INTERFACE_NAME, for those not set already."""
    iface = env.get("SM_NETWORK_INTERFACE_NAME")
    if not iface:
        return {}
    return {key: iface for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if not env.get(key)}


def export_defaults(updates: Mapping[str, str], env: MutableMapping[str, str] | None = None) -> None:
    """Set each variable of `updates` that is not set already."""
    target = os.environ if env is None else env
    for key, value in updates.items():
        target.setdefault(key, value)

"""One emulated host of `--local` (`launch.jobs.local`): its `/opt/ml` folders and channels, the
command the SDK's driver would run there, the Python it runs with, and its environment, which the
SDK's own container script (`set_env`) computes, re-rooted into the host folder:

    SM_MODEL_DIR SM_INPUT_DIR SM_INPUT_DATA_DIR SM_INPUT_CONFIG_DIR SM_OUTPUT_DIR SM_OUTPUT_DATA_DIR
    SM_OUTPUT_FAILURE SM_LOG_LEVEL SM_MASTER_ADDR SM_MASTER_PORT SM_CHANNEL_<NAME> SM_CHANNELS
    SM_HP_<KEY> SM_HPS SM_CURRENT_HOST SM_CURRENT_INSTANCE_TYPE SM_HOSTS SM_NETWORK_INTERFACE_NAME
    SM_HOST_COUNT SM_CURRENT_HOST_RANK SM_NUM_CPUS SM_NUM_GPUS SM_NUM_NEURONS SM_RESOURCE_CONFIG
    SM_INPUT_DATA_CONFIG SM_TRAINING_ENV

plus, as the driver adds them, `SM_SOURCE_DIR`, `SM_ENTRY_SCRIPT`, `SM_DISTRIBUTED_DRIVER_DIR` and
`SM_DISTRIBUTED_CONFIG` (torchrun only), and `TRAINING_JOB_NAME`. The hosts share this machine: the
master is 127.0.0.1 at a free port, the interface `lo`. With `--container-venv` a host's own venv
sees only the training image's `IMAGE_PACKAGES`, and requirements.txt is installed into it, timed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from unittest import mock

from launch.console import log
from launch.jobs import code, s3data, wheelhouse
from launch.jobs.spec import JobSpec
from titanic_lightning.environment import CHECKPOINT_DIR_VARIABLE, without_launcher
from titanic_lightning.errors import UsageError, one_line
from titanic_lightning.sagemaker_facts import OPT_ML

NETWORK_INTERFACE = "lo"  # every host talks over loopback here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hosts_for(count: int) -> list[str]:
    return [f"algo-{i + 1}" for i in range(count)]


def resource_config(spec: JobSpec, host: str) -> dict:
    hosts = hosts_for(spec.instance_count)
    group = {"instance_group_name": "homogeneousCluster", "instance_type": spec.instance_type, "hosts": hosts}
    return {"current_host": host, "current_instance_type": spec.instance_type, "current_group_name": "homogeneousCluster",
            "hosts": hosts, "instance_groups": [group], "network_interface_name": NETWORK_INTERFACE}


def lay_out_host(host_dir: Path, spec: JobSpec, host: str, data_dir: Path, code_dir: Path, wheels_dir: Path | None = None) -> dict:
    """Create one host's /opt/ml tree; return its input data config."""
    config = host_dir / "input" / "config"
    config.mkdir(parents=True)
    for sub in ("model", "output/data", "checkpoints"):
        (host_dir / sub).mkdir(parents=True)
    data, files = host_dir / "input" / "data", s3data.channel_files(data_dir)
    for name, paths in files.items():
        (data / name).mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, data / name / path.name)
    links = {"code": code_dir} if wheels_dir is None else {"code": code_dir, wheels_dir.name: wheels_dir}
    for name, target in links.items():
        (data / name).symlink_to(os.path.relpath(target, data))
    channels = {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                for name in [*files, *links]}
    (config / "resourceconfig.json").write_text(json.dumps(resource_config(spec, host), indent=2))
    (config / "hyperparameters.json").write_text(json.dumps(spec.hyperparameters, indent=2))
    (config / "inputdataconfig.json").write_text(json.dumps(channels, indent=2))
    return channels


@contextmanager
def _sdk_environment_script():
    """Import the SDK's container environment script without leaving its path hack behind."""
    saved = list(sys.path)
    try:
        from sagemaker.train.container_drivers.scripts import environment as sm_env
    finally:
        sys.path[:] = saved
    logging.getLogger(sm_env.__name__).setLevel(logging.WARNING)  # it logs every variable; stdout carries the summary
    yield sm_env


def sagemaker_env(spec: JobSpec, job_name: str, host: str, host_dir: Path, channels: dict, port: int) -> dict[str, str]:
    """The SM_* variables SageMaker's driver would set on `host`, re-rooted into `host_dir`."""
    env_file = host_dir / "input" / "sm_training.env"
    with _sdk_environment_script() as sm_env, mock.patch.dict(os.environ, {"TRAINING_JOB_NAME": job_name}):
        sm_env.set_env(resource_config=resource_config(spec, host), input_data_config=channels,
                       hyperparameters_config=dict(spec.hyperparameters), output_file=str(env_file))
    env = dict(shlex.split(line)[1].split("=", 1) for line in env_file.read_text().splitlines() if line.startswith("export "))
    env.update(SM_SOURCE_DIR=code.CODE_DIR_IN_CONTAINER, SM_ENTRY_SCRIPT=code.ENTRY_SCRIPT)
    if spec.distributed:
        env["SM_DISTRIBUTED_DRIVER_DIR"] = f"{OPT_ML}/input/data/sm_drivers/distributed_drivers"
        env["SM_DISTRIBUTED_CONFIG"] = json.dumps({"process_count_per_node": spec.process_count_per_node, "smp": None})
    env.update(SM_MASTER_ADDR="127.0.0.1", SM_MASTER_PORT=str(port), TRAINING_JOB_NAME=job_name,
               SM_TRAINING_ENV=json.dumps({**json.loads(env["SM_TRAINING_ENV"]), "master_addr": "127.0.0.1", "master_port": port}))
    root = str(host_dir)
    env = {k: _rerooted(v, root) for k, v in env.items()}
    # Rewrite the file too, so what a user sources by hand matches what the host ran with; quoted
    # for the shell, since the host paths come from --jobs-dir.
    env_file.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))
    return env


def _rerooted(value: str, root: str) -> str:
    """`value` with /opt/ml/ moved to `root`; inside a JSON value (SM_TRAINING_ENV) `root` is escaped."""
    try:
        structured = isinstance(json.loads(value), (dict, list))
    except ValueError:
        structured = False
    return value.replace(f"{OPT_ML}/", json.dumps(f"{root}/")[1:-1] if structured else f"{root}/")


def host_command(spec: JobSpec, env: dict[str, str], python: str | None = None) -> list[str]:
    """What the SDK's basic-script or torchrun driver would execute on this host."""
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    python = python or sys.executable
    args = hyperparameters_to_cli_args(json.loads(env["SM_HPS"]))
    if not spec.distributed:
        return [python, code.ENTRY_SCRIPT, *args]
    # The job's processes per instance, else the driver's own default: one process per GPU, else one.
    per_node = (spec.process_count_per_node or int(env.get("SM_NUM_GPUS") or 0) or int(env.get("SM_NUM_NEURONS") or 0)
                or 1)
    # The driver passes the master only with several hosts; here it is always passed, so a
    # single-host run never takes torchrun's default port 29500 from another job on this machine.
    return [python, "-m", "torch.distributed.run", f"--nnodes={spec.instance_count}", f"--nproc_per_node={per_node}",
            f"--master_addr={env['SM_MASTER_ADDR']}", f"--master_port={env['SM_MASTER_PORT']}",
            f"--node_rank={env['SM_CURRENT_HOST_RANK']}", code.ENTRY_SCRIPT, *args]


def process_env(sm: dict[str, str], code_dir: Path, distributed: bool, checkpoint_dir: Path | None = None) -> dict[str, str]:
    # What a parent torchrun or SageMaker process would leak into the hosts' own is dropped.
    env = {**without_launcher(), **sm, "PYTHONPATH": str(code_dir), "PYTHONUNBUFFERED": "1"}
    env.pop(CHECKPOINT_DIR_VARIABLE, None)
    if checkpoint_dir is not None:
        env[CHECKPOINT_DIR_VARIABLE] = str(checkpoint_dir)
    if distributed:  # as torchrun_driver.setup_env does
        env["NCCL_SOCKET_IFNAME"] = sm.get("SM_NETWORK_INTERFACE_NAME", NETWORK_INTERFACE)
        env["NCCL_PROTO"] = "simple"
    return env


IMAGE_PACKAGES = ("torch", "numpy", "pandas", "scikit-learn")
VENV_PYTHON = Path("bin") / "python"


def _run(command: list[str], what: str, **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise UsageError(f"{what} failed (exit code {done.returncode}): {one_line(done.stderr)[-400:]}")


def image_venv(cache: Path | None = None) -> Path:
    """The Python of the base environment, built once under the cache: a clean venv (not
    --system-site-packages, which would bring in everything this interpreter has) with `IMAGE_PACKAGES`."""
    pins = [f"{name}=={metadata.version(name)}" for name in IMAGE_PACKAGES]
    key = hashlib.sha256(json.dumps([sys.version, pins]).encode()).hexdigest()[:16]
    venv = (cache or wheelhouse.default_cache()) / "image-venv" / key
    done = venv / ".complete"
    if not done.is_file():
        log(f"building the training image's stand-in environment {venv} (once): {' '.join(pins)} ...")
        shutil.rmtree(venv, ignore_errors=True)  # an interrupted build; only this function writes here
        _run([sys.executable, "-m", "venv", str(venv)], "creating the image environment")
        _run([str(venv / VENV_PYTHON), "-m", "pip", "install", "--quiet", *pins], "installing the image's packages")
        done.write_text("\n".join(pins) + "\n")
    return venv / VENV_PYTHON


def host_venv(path: Path, base_python: Path) -> Path:
    """A host's own venv, seeing the base environment's packages (and pip) through a .pth file, as
    the image's Python sees its own; pip installs into the host's. Its Python's path."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], "creating the host environment")
    base = subprocess.run([str(base_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    site_packages = path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site_packages / "_training_image.pth").write_text(base + "\n")
    return path / VENV_PYTHON


def install_requirements(python: Path, code_dir: Path, log_path: Path) -> tuple[int, float]:
    """Run the SDK's container install script with `python` in `code_dir`, as sm_train.sh does
    (`install_requirements.py requirements.txt`); its output goes to `log_path`. (exit code, seconds)."""
    from sagemaker.core.utils import install_requirements as sdk_install

    env = {k: v for k, v in without_launcher().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    started = time.perf_counter()
    with log_path.open("a") as out:
        out.write(f"Installing requirements\n{(code_dir / code.REQUIREMENTS_FILE).read_text()}")
        out.flush()
        done = subprocess.run([str(python), sdk_install.__file__, code.REQUIREMENTS_FILE], cwd=code_dir, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    return done.returncode, round(time.perf_counter() - started, 2)

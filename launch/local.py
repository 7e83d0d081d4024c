"""Run a training job the way SageMaker would, on this machine, without Docker (`--local`).

One job directory per run (`./jobs/<job-name>/`, printed), with one folder per host standing in
for that instance's `/opt/ml`:

    jobs/<job-name>/
      code/                                  the staged code (titanic_lightning/, entry/, requirements.txt)
      algo-1/                                = /opt/ml on the first instance
        input/config/resourceconfig.json     current_host, hosts, instance type, network interface
        input/config/hyperparameters.json    {key: "value"} strings, as SageMaker writes them
        input/config/inputdataconfig.json    one entry per channel (train, val, test, code)
        input/data/<channel>/                copies of the channel's files; input/data/code -> ../../../code
        input/sm_training.env                the variables below, as the SDK's driver writes them
        model/  output/data/  output/failure  checkpoints/
      algo-2/ ...
      logs/algo-1.log ...                    each host's stdout and stderr (CloudWatch's role)
      checkpoints/                           stands in for the job's own checkpoint S3 URI
      model.tar.gz  output.tar.gz  summary.json

Every instance of a real job has its own `/opt/ml`, checkpoints folder included, so every host
here has its own too. As SageMaker does with the checkpoint URI, the job's checkpoint store is
copied into every host's `checkpoints/` before the hosts start, and what the hosts write there is
copied back while they run and once more when they end. A new job's store starts empty, so the
same command run again trains afresh; `--resume JOB` first copies JOB's store into the new job's
(JOB's own is left as it was), so the new job continues where JOB stopped. SageMaker names
`/opt/ml/checkpoints` in no variable; here TITANIC_CHECKPOINT_DIR points the entry at its host's
folder.

The environment of each host is computed by the SDK's own container script
(`sagemaker.train.container_drivers.scripts.environment.set_env`), then its `/opt/ml` paths are
moved into the host folder. The variables it sets:

    SM_MODEL_DIR SM_INPUT_DIR SM_INPUT_DATA_DIR SM_INPUT_CONFIG_DIR SM_OUTPUT_DIR SM_OUTPUT_DATA_DIR
    SM_OUTPUT_FAILURE SM_LOG_LEVEL SM_MASTER_ADDR SM_MASTER_PORT SM_CHANNEL_<NAME> SM_CHANNELS
    SM_HP_<KEY> SM_HPS SM_CURRENT_HOST SM_CURRENT_INSTANCE_TYPE SM_HOSTS SM_NETWORK_INTERFACE_NAME
    SM_HOST_COUNT SM_CURRENT_HOST_RANK SM_NUM_CPUS SM_NUM_GPUS SM_NUM_NEURONS SM_RESOURCE_CONFIG
    SM_INPUT_DATA_CONFIG SM_TRAINING_ENV

plus, as the driver adds them, `SM_SOURCE_DIR`, `SM_ENTRY_SCRIPT`, `SM_DISTRIBUTED_DRIVER_DIR` and
`SM_DISTRIBUTED_CONFIG` (torchrun only), and `TRAINING_JOB_NAME`. Differences from a real
instance, all because the hosts share this machine: `SM_MASTER_ADDR` is 127.0.0.1 and
`SM_MASTER_PORT` a free port (algo-N names do not resolve here), the network interface is `lo`,
`SM_NUM_CPUS`/`SM_NUM_GPUS` are this machine's, and PYTHONPATH is the staged code folder (what
the real job sets it to).

Each host is one subprocess (its own process group), started in its code folder like the
driver: `python entry/train.py --key value ...`, or with torchrun distribution
`python -m torch.distributed.run --nnodes=N --nproc_per_node=P --master_addr=127.0.0.1
--master_port=PORT --node_rank=R entry/train.py --key value ...`. When one host fails, the others
are stopped; the job fails with the first failing host's `output/failure` as its reason. SIGTERM
or Ctrl-C stops the job the way StopTrainingJob or a spot reclaim does: SIGTERM to every host,
SIGKILL after a grace period, status Stopped. The last line printed is the summary as one JSON
object.

With a wheelhouse (`--wheelhouse`, `--network-isolation`) the job folder gets `wheels/` (built
for this machine and Python, see `launch.wheelhouse`) and each host the `wheels` channel beside
`code`. Nothing is installed unless `container_venv` (`--container-venv`): then each host gets its
own virtual environment, `algo-N/venv`, holding only what the PyTorch training image holds (torch,
numpy, pandas, scikit-learn, from a base environment built once in the cache and seen through a
.pth file), the SDK's own `install_requirements.py` installs the staged requirements.txt into it
from the host's code folder as the container does on every host, timed (`install_seconds` in the
summary), and the host runs with that environment's Python. A failed install fails the job, as
the container's error trap does.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

from launch import code, s3data
from launch.console import log
from launch.job import JobSpec
from launch.processes import STOP_GRACE_S, stop_groups
from titanic_lightning.contracts import CHECKPOINT_FILE, METRICS_FILE
from titanic_lightning.environment import CHECKPOINT_DIR_VARIABLE, without_launcher
from titanic_lightning.errors import Terminated, UsageError, one_line
from titanic_lightning.io.atomic import atomic_output
from titanic_lightning.sagemaker_facts import FAILURE_REASON_LIMIT, OPT_ML

NETWORK_INTERFACE = "lo"  # every host talks over loopback here
POLL_S = 0.2
CHECKPOINT_SYNC_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_job_dir(jobs_dir: Path, base_job_name: str) -> tuple[str, Path]:
    """A fresh job name (the SDK's `<base>-<timestamp>` form, and 4 random hex digits: jobs started
    in the same second differ) and its directory, made by this call."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    while True:
        name = f"{base_job_name[:43]}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
        try:
            (jobs_dir / name).mkdir()
            return name, jobs_dir / name
        except FileExistsError:
            continue


# --- one host's /opt/ml ----------------------------------------------------------------------


def hosts_for(count: int) -> list[str]:
    return [f"algo-{i + 1}" for i in range(count)]


def resource_config(spec: JobSpec, host: str) -> dict:
    hosts = hosts_for(spec.instance_count)
    return {
        "current_host": host,
        "current_instance_type": spec.instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": hosts,
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": spec.instance_type,
                             "hosts": hosts}],
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(channels: list[str]) -> dict:
    return {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
            for name in channels}


def lay_out_host(host_dir: Path, spec: JobSpec, host: str, data_dir: Path, code_dir: Path,
                 wheels_dir: Path | None = None) -> dict:
    """Create one host's /opt/ml tree; return its input data config."""
    config = host_dir / "input" / "config"
    config.mkdir(parents=True)
    for sub in ("model", "output/data", "checkpoints"):
        (host_dir / sub).mkdir(parents=True)
    data = host_dir / "input" / "data"
    for name, files in s3data.channel_files(data_dir).items():
        (data / name).mkdir(parents=True)
        for path in files:
            shutil.copy2(path, data / name / path.name)
    (data / "code").symlink_to(os.path.relpath(code_dir, data))
    extra = ["code"]
    if wheels_dir is not None:
        (data / wheels_dir.name).symlink_to(os.path.relpath(wheels_dir, data))
        extra.append(wheels_dir.name)
    channels = input_data_config([*s3data.channel_files(data_dir), *extra])
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
    # It logs every variable to stdout; here stdout carries the job summary.
    logging.getLogger(sm_env.__name__).setLevel(logging.WARNING)
    yield sm_env


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = shlex.split(line[len("export "):])[0].partition("=")
            env[key] = value
    return env


def sagemaker_env(spec: JobSpec, job_name: str, host: str, host_dir: Path, channels: dict, port: int) -> dict[str, str]:
    """The SM_* variables SageMaker's driver would set on `host`, re-rooted into `host_dir`."""
    config = host_dir / "input" / "config"
    env_file = host_dir / "input" / "sm_training.env"
    with _sdk_environment_script() as sm_env, mock.patch.dict(os.environ, {"TRAINING_JOB_NAME": job_name}):
        sm_env.set_env(
            resource_config=json.loads((config / "resourceconfig.json").read_text()),
            input_data_config=channels,
            hyperparameters_config=json.loads((config / "hyperparameters.json").read_text()),
            output_file=str(env_file),
        )
    env = _read_env_file(env_file)
    env["SM_SOURCE_DIR"] = code.CODE_DIR_IN_CONTAINER
    env["SM_ENTRY_SCRIPT"] = code.ENTRY_SCRIPT
    if spec.distributed:
        env["SM_DISTRIBUTED_DRIVER_DIR"] = f"{OPT_ML}/input/data/sm_drivers/distributed_drivers"
        env["SM_DISTRIBUTED_CONFIG"] = json.dumps({"process_count_per_node": spec.process_count_per_node, "smp": None})
    env["SM_MASTER_ADDR"], env["SM_MASTER_PORT"] = "127.0.0.1", str(port)
    training_env = json.loads(env["SM_TRAINING_ENV"])
    training_env.update(master_addr="127.0.0.1", master_port=port)
    env["SM_TRAINING_ENV"] = json.dumps(training_env)
    env["TRAINING_JOB_NAME"] = job_name
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
    return [
        python, "-m", "torch.distributed.run",
        f"--nnodes={spec.instance_count}", f"--nproc_per_node={per_node}",
        f"--master_addr={env['SM_MASTER_ADDR']}", f"--master_port={env['SM_MASTER_PORT']}",
        f"--node_rank={env['SM_CURRENT_HOST_RANK']}",
        code.ENTRY_SCRIPT, *args,
    ]


def process_env(sm: dict[str, str], code_dir: Path, distributed: bool, checkpoint_dir: Path | None = None) -> dict[str, str]:
    # What a parent torchrun or SageMaker process would leak into the hosts' own is dropped.
    env = without_launcher()
    env.pop(CHECKPOINT_DIR_VARIABLE, None)
    env.update(sm)
    if checkpoint_dir is not None:
        env[CHECKPOINT_DIR_VARIABLE] = str(checkpoint_dir)
    env["PYTHONPATH"] = str(code_dir)
    env["PYTHONUNBUFFERED"] = "1"
    if distributed:  # as torchrun_driver.setup_env does
        env["NCCL_SOCKET_IFNAME"] = sm.get("SM_NETWORK_INTERFACE_NAME", NETWORK_INTERFACE)
        env["NCCL_PROTO"] = "simple"
    return env


# --- the container's Python: only what the training image holds, then requirements.txt -------

# What the PyTorch training image holds that the job relies on; the base environment gets this
# machine's versions of them (from its pip cache or index).
IMAGE_PACKAGES = ("torch", "numpy", "pandas", "scikit-learn")
VENV_PYTHON = Path("bin") / "python"


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _run(command: list[str], what: str, **kwargs) -> None:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise UsageError(f"{what} failed (exit code {done.returncode}): {one_line(done.stderr)[-400:]}")


def image_venv(cache: Path | None = None) -> Path:
    """The base environment: a clean venv (not --system-site-packages, which would bring in
    everything this interpreter has) with `IMAGE_PACKAGES` at this interpreter's versions, built
    once under the cache; its Python's path."""
    import hashlib
    from importlib import metadata

    from launch import wheelhouse

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
    (_site_packages(path) / "_training_image.pth").write_text(base + "\n")
    return path / VENV_PYTHON


def install_requirements(python: Path, code_dir: Path, log_path: Path) -> tuple[int, float]:
    """Run the SDK's container install script with `python` in `code_dir`, as sm_train.sh does
    (`install_requirements.py requirements.txt`); its output goes to `log_path`. (exit code, seconds)."""
    from sagemaker.core.utils import install_requirements as sdk_install

    env = without_launcher()
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    started = time.perf_counter()
    with log_path.open("a") as out:
        out.write(f"Installing requirements\n{(code_dir / code.REQUIREMENTS_FILE).read_text()}")
        out.flush()
        done = subprocess.run([str(python), sdk_install.__file__, code.REQUIREMENTS_FILE], cwd=code_dir, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    return done.returncode, round(time.perf_counter() - started, 2)


# --- checkpoints: the store standing in for the checkpoint S3 URI ----------------------------


CHECKPOINT_STORE = "checkpoints"


def checkpoint_store(job_dir: Path) -> Path:
    return job_dir / CHECKPOINT_STORE


def resume_source(jobs_dir: Path, job_name: str) -> Path:
    """The checkpoint store of the earlier job `job_name`, which must hold a last.ckpt."""
    job_dir = jobs_dir / job_name
    if not job_dir.is_dir():
        raise UsageError(f"--resume {job_name}: no such job in {jobs_dir} (a job's name is its folder there)")
    store = checkpoint_store(job_dir)
    if not (store / CHECKPOINT_FILE).is_file():
        raise UsageError(f"--resume {job_name}: no {CHECKPOINT_FILE} in {store} (the job ended before its first "
                         "checkpoint); nothing to resume")
    return store


def _same_file_version(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime) == (b.st_size, b.st_mtime)  # copy2 keeps the modification time


def copy_tree(source: Path, target: Path) -> None:
    """Copy the files under `source` that are new or changed into `target`, each by rename.

    The entry replaces last.ckpt by rename too, so a file is never read or left half-written.
    """
    if not source.is_dir():
        return
    for path in source.rglob("*"):
        if not path.is_file() or path.name.startswith("."):  # partial files being written start with "."
            continue
        dest = target / path.relative_to(source)
        try:
            stat = path.stat()
            if dest.is_file() and _same_file_version(dest.stat(), stat):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(dest) as partial:
                shutil.copy2(path, partial)
        except FileNotFoundError:  # replaced while we looked; the next sync takes the new one
            continue


# --- running the hosts -----------------------------------------------------------------------


@dataclass
class Host:
    name: str
    dir: Path
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen | None = None
    install_seconds: float | None = None
    exit_code: int | None = None
    stopped: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def failure_file(self) -> Path:
        return self.dir / "output" / "failure"

    def failure_reason(self) -> str | None:
        try:
            text = self.failure_file.read_text(errors="replace")
        except OSError:
            return None
        return one_line(text)[:FAILURE_REASON_LIMIT] or None


def _pump(host: Host) -> None:
    """Copy a host's output to its log file and to stderr, each line tagged with the host."""
    with host.log.open("a") as log:  # after the requirements' install, when there is one
        for line in host.process.stdout:
            log.write(line)
            log.flush()
            sys.stderr.write(f"[{host.name}] {line}")
            sys.stderr.flush()


def _start(host: Host, cwd: Path) -> None:
    host.process = subprocess.Popen(
        host.command, cwd=cwd, env=host.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", start_new_session=True,  # its own process group: torchrun's workers stop with it
    )
    thread = threading.Thread(target=_pump, args=(host,), daemon=True)
    thread.start()
    host.threads.append(thread)


def _stop(hosts: list[Host]) -> None:
    """SIGTERM each running host's process group, then SIGKILL what is left after the grace period."""
    running = [h for h in hosts if h.process and h.process.poll() is None]
    for h in running:
        h.stopped = True
    stop_groups([h.process for h in running], STOP_GRACE_S, POLL_S)


class StopRequest:
    """SIGTERM and SIGINT ask the supervisor to stop the job, the way StopTrainingJob does."""

    def __init__(self):
        self.signal: int | None = None

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signal = signum

    def raise_if_requested(self) -> None:
        """End the command as the signal would, before anything has been started."""
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is not None:
            raise Terminated(f"stopped by {signal.Signals(self.signal).name} before the job started")


def _supervise(hosts: list[Host], timeout_s: float, stop: StopRequest | None = None,
               every_poll=None) -> tuple[Host | None, bool]:
    """Wait for every host; stop the rest when one fails. Return (first failed host, timed out).

    A stop request stops every host; `every_poll` runs between polls (the checkpoint sync).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for h in hosts:
            h.exit_code = h.process.poll()
        failed = [h for h in hosts if h.exit_code not in (None, 0)]
        if failed:
            _stop(hosts)
            return failed[0], False
        if all(h.exit_code == 0 for h in hosts):
            return None, False
        if time.monotonic() > deadline:
            _stop(hosts)
            return None, True
        if stop is not None and stop.signal is not None:
            _stop(hosts)
            return None, False
        if every_poll is not None:
            every_poll()
        time.sleep(POLL_S)


# --- artifacts -------------------------------------------------------------------------------


def pack(dirs: list[Path], target: Path) -> list[str]:
    """Tar the union of `dirs` into `target`; return names written by more than one host."""
    seen: dict[str, Path] = {}
    clashes = []
    with tarfile.open(target, "w:gz") as tar:
        for root in dirs:
            for path in sorted(root.rglob("*")):
                if path.is_dir():
                    continue
                name = path.relative_to(root).as_posix()
                if name in seen:
                    clashes.append(name)
                    continue
                seen[name] = path
                tar.add(path, arcname=name)
    return clashes


def _metrics(hosts: list[Host]) -> dict | None:
    for h in hosts:
        path = h.dir / "model" / METRICS_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
    return None


@dataclass
class _Job:
    """A laid-out job: its name and folder, the checkpoint store, and its hosts, ready to start."""

    name: str
    dir: Path
    store: Path
    hosts: list[Host]
    install: bool = False  # each host installs requirements.txt into its own environment first


@dataclass
class _Outcome:
    """How the hosts ended."""

    first_failed: Host | None
    timed_out: bool
    stop_signal: int | None
    wall_seconds: float


def run(spec: JobSpec, data_dir: Path, jobs_dir: Path, timeout_s: float | None = None,
        stop: StopRequest | None = None, container_venv: bool = False) -> dict:
    """Emulate the job; return the summary (also written to <job_dir>/summary.json).

    `stop`, installed by the caller from its start, keeps a Ctrl-C or SIGTERM that comes before
    the hosts start: the job then stops as soon as they do.
    """
    max_run_s = timeout_s or spec.max_run_s
    stop = stop or StopRequest()
    with stop.installed():
        job = lay_out_job(spec, data_dir, jobs_dir, container_venv=container_venv)
        return summarise(job, spec, supervise_job(job, max_run_s, stop), max_run_s)


def lay_out_job(spec: JobSpec, data_dir: Path, jobs_dir: Path, container_venv: bool = False) -> _Job:
    """The job folder: staged code (and wheels), logs, the checkpoint store (a resumed job's copied
    in), and one /opt/ml per host with its channels, checkpoints, command and environment (and, with
    `container_venv`, its own Python environment)."""
    from launch import wheelhouse

    jobs_dir = jobs_dir.resolve()
    resumed = resume_source(jobs_dir, spec.resume) if spec.resume is not None else None
    s3data.ensure_prepared(data_dir)
    built = wheelhouse.build(code.requirements(), wheelhouse.Target.here()) if spec.uses_wheelhouse else None
    base_python = image_venv() if container_venv else None
    job_name, job_dir = new_job_dir(jobs_dir, spec.base_job_name)
    log(f"job directory: {job_dir}")
    code_dir = code.stage(job_dir / "code", wheelhouse=spec.uses_wheelhouse)
    wheels_dir = None
    if built is not None:
        wheels_dir = job_dir / wheelhouse.CHANNEL
        wheels_dir.mkdir()
        for path in built.files:  # a hard link where the cache shares the file system, else a copy
            try:
                os.link(path, wheels_dir / path.name)
            except OSError:
                shutil.copy2(path, wheels_dir / path.name)
    (job_dir / "logs").mkdir()
    port = free_port()
    store = checkpoint_store(job_dir)
    store.mkdir()
    if resumed is not None:
        copy_tree(resumed, store)
        log(f"checkpoints of {spec.resume} ({resumed}) restored on every host")
    hosts: list[Host] = []
    for name in hosts_for(spec.instance_count):
        host_dir = job_dir / name
        channels = lay_out_host(host_dir, spec, name, data_dir, code_dir, wheels_dir)
        copy_tree(store, host_dir / "checkpoints")
        sm = sagemaker_env(spec, job_name, name, host_dir, channels, port)
        python = str(host_venv(host_dir / "venv", base_python)) if base_python is not None else None
        hosts.append(Host(name=name, dir=host_dir, command=host_command(spec, sm, python),
                          log=job_dir / "logs" / f"{name}.log",
                          env=process_env(sm, code_dir, spec.distributed, checkpoint_dir=host_dir / "checkpoints")))
    if spec.gpu and int(hosts[0].env.get("SM_NUM_GPUS", "0")) == 0:
        log(f"note: {spec.instance_type} has a GPU, this machine has none: the hosts train on CPU")
    log(f"running: {' '.join(hosts[0].command)}")
    return _Job(name=job_name, dir=job_dir, store=store, hosts=hosts, install=base_python is not None)


def supervise_job(job: _Job, max_run_s: float, stop: StopRequest) -> _Outcome:
    """Start every host, copy their checkpoints to the store while they run, stop them all on a
    failure, a stop request or the time limit, and write the failure file a silent failure lacks."""
    hosts, last_sync = job.hosts, 0.0

    def sync_checkpoints():
        nonlocal last_sync
        if time.monotonic() - last_sync >= CHECKPOINT_SYNC_S:
            for h in hosts:
                copy_tree(h.dir / "checkpoints", job.store)
            last_sync = time.monotonic()

    started = time.perf_counter()
    if job.install:
        for h in hosts:
            cwd = h.dir / "input" / "data" / "code"
            exit_code, h.install_seconds = install_requirements(Path(h.command[0]), cwd, h.log)
            log(f"{h.name}: requirements installed in {h.install_seconds} s" if exit_code == 0
                else f"{h.name}: installing requirements failed (exit code {exit_code}); see {h.log}")
            if exit_code != 0:
                h.exit_code = exit_code
                h.failure_file.write_text(f"{h.name}: installing requirements.txt failed with exit code {exit_code}; "
                                          f"see {h.log}\n")
                return _Outcome(first_failed=h, timed_out=False, stop_signal=stop.signal,
                                wall_seconds=round(time.perf_counter() - started, 3))
    for h in hosts:
        _start(h, cwd=h.dir / "input" / "data" / "code")  # the driver's `cd /opt/ml/input/data/code`
    first_failed, timed_out = _supervise(hosts, max_run_s, stop, sync_checkpoints)
    wall = round(time.perf_counter() - started, 3)
    for h in hosts:
        h.exit_code = h.process.wait()
        for t in h.threads:
            t.join(timeout=5)
        if h.exit_code != 0 and not h.stopped and not h.failure_reason():
            # What the driver's error trap writes when the script left no reason of its own.
            h.failure_file.write_text(f"{h.name}: training script exited with code {h.exit_code}; see {h.log}\n")

    for h in hosts:
        copy_tree(h.dir / "checkpoints", job.store)
    return _Outcome(first_failed=first_failed, timed_out=timed_out, stop_signal=stop.signal, wall_seconds=wall)


def summarise(job: _Job, spec: JobSpec, outcome: _Outcome, max_run_s: float) -> dict:
    """The job's status and reason, model.tar.gz (when it completed) and output.tar.gz, and the
    summary, written to summary.json."""
    hosts, first_failed = job.hosts, outcome.first_failed
    if outcome.stop_signal is not None and first_failed is None and not outcome.timed_out:
        status = "Stopped"
        reason = (f"stopped by {signal.Signals(outcome.stop_signal).name}; add --resume {job.name} to the command to "
                  f"continue from the checkpoints in {job.store}")
    elif outcome.timed_out:
        status, reason = "Stopped", f"MaxRuntimeExceeded: the job ran past {max_run_s} s"
    elif first_failed is not None:
        status = "Failed"
        reason = first_failed.failure_reason() or f"{first_failed.name} exited with code {first_failed.exit_code}"
    else:
        status, reason = "Completed", None

    warnings = []
    model_artifact = None
    if status == "Completed":
        model_artifact = job.dir / "model.tar.gz"
        clashes = pack([h.dir / "model" for h in hosts], model_artifact)
        if clashes:
            warnings.append(f"model files written by more than one host (first kept): {', '.join(sorted(set(clashes)))}")
    output_artifact = job.dir / "output.tar.gz"
    pack([h.dir / "output" / "data" for h in hosts], output_artifact)

    summary = {
        "status": status,
        "job_name": job.name,
        "job_dir": str(job.dir),
        "model_artifact": str(model_artifact) if model_artifact else None,
        "output_artifact": str(output_artifact),
        "wall_seconds": outcome.wall_seconds,
        "failure_reason": reason,
        "stopped_by_signal": signal.Signals(outcome.stop_signal).name if outcome.stop_signal is not None else None,
        "checkpoints": str(job.store),
        "resumed_from": spec.resume,
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "spot": spec.spot,
        "distributed": spec.distributed,
        "network_isolation": spec.network_isolation,
        "wheelhouse": spec.uses_wheelhouse,
        "container_venv": job.install,
        "hyperparameters": spec.hyperparameters,
        "command": hosts[0].command,
        "hosts": [
            {"host": h.name, "exit_code": h.exit_code, "stopped_by_launcher": h.stopped, "install_seconds": h.install_seconds,
             "failure_reason": h.failure_reason(), "log": str(h.log)}
            for h in hosts
        ],
        "metrics": _metrics(hosts),
        "warnings": warnings,
    }
    (job.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

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

Each host is one subprocess (its own process group), started in its code folder like the
driver: `python entry/train.py --key value ...`, or with torchrun distribution
`python -m torch.distributed.run --nnodes=N --nproc_per_node=P --master_addr=127.0.0.1
--master_port=PORT --node_rank=R entry/train.py --key value ...`. When one host fails, the others
are stopped; the job fails with the first failing host's `output/failure` as its reason. SIGTERM
or Ctrl-C stops the job the way StopTrainingJob or a spot reclaim does: SIGTERM to every host,
SIGKILL after a grace period, status Stopped. However the job ends, no process a host started
(torchrun's workers included) outlives the command (`launch.jobs.descendants`). The summary is
written to `summary.json`; `launch/submit.py --local` prints the run record's lines, and `--json`
this summary.

With a wheelhouse (`--wheelhouse`, `--network-isolation`) the job folder gets `wheels/` (built
for this machine and Python, see `launch.jobs.wheelhouse`) and each host the `wheels` channel beside
`code`. How each host is laid out, its environment and its Python: `launch.jobs.container`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from launch.console import log
from launch.jobs import code, container, folder, s3data
from launch.jobs.processes import Host, StopRequest, held, start, supervise
from launch.jobs.spec import JobSpec
from titanic_lightning.contracts import METRICS_FILE
from titanic_lightning.errors import UsageError
from titanic_lightning.io.clean import record_made

CHECKPOINT_SYNC_S = 1.0


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
        try:
            return summarise(job, spec, supervise_job(job, max_run_s, stop), max_run_s)
        finally:  # the hosts have ended: what is in the job folder now is the job's (see `make clean`)
            with contextlib.suppress(OSError, UsageError):  # unrecorded, the files merely outlive `make clean`
                record_made(job.dir, "--jobs-dir", "submit")


def lay_out_job(spec: JobSpec, data_dir: Path, jobs_dir: Path, container_venv: bool = False) -> _Job:
    """The job folder: staged code (and wheels), logs, the checkpoint store (a resumed job's copied
    in), and one /opt/ml per host with its channels, checkpoints, command and environment (and, with
    `container_venv`, its own Python environment)."""
    from launch.jobs import wheelhouse

    jobs_dir = jobs_dir.resolve()
    resumed = folder.resume_source(jobs_dir, spec.resume) if spec.resume is not None else None
    s3data.ensure_prepared(data_dir)
    built = wheelhouse.build(code.requirements(), wheelhouse.Target.here()) if spec.uses_wheelhouse else None
    base_python = container.image_venv() if container_venv else None
    job_name, job_dir = folder.new_job_dir(jobs_dir, spec.base_job_name)
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
    port = container.free_port()
    job_store = job_dir / folder.STORE
    job_store.mkdir()
    if resumed is not None:
        folder.copy_tree(resumed, job_store)
        log(f"checkpoints of {spec.resume} ({resumed}) restored on every host")
    hosts: list[Host] = []
    for name in container.hosts_for(spec.instance_count):
        host_dir = job_dir / name
        channels = container.lay_out_host(host_dir, spec, name, data_dir, code_dir, wheels_dir)
        folder.copy_tree(job_store, host_dir / "checkpoints")
        sm = container.sagemaker_env(spec, job_name, name, host_dir, channels, port)
        python = str(container.host_venv(host_dir / "venv", base_python)) if base_python is not None else None
        hosts.append(Host(name=name, dir=host_dir, command=container.host_command(spec, sm, python),
                          log=job_dir / "logs" / f"{name}.log",
                          env=container.process_env(sm, code_dir, spec.distributed, checkpoint_dir=host_dir / "checkpoints")))
    if spec.gpu and int(hosts[0].env.get("SM_NUM_GPUS", "0")) == 0:
        log(f"note: {spec.instance_type} has a GPU, this machine has none: the hosts train on CPU")
    log(f"running: {' '.join(hosts[0].command)}")
    return _Job(name=job_name, dir=job_dir, store=job_store, hosts=hosts, install=base_python is not None)


def supervise_job(job: _Job, max_run_s: float, stop: StopRequest) -> _Outcome:
    """Start every host, copy their checkpoints to the store while they run, stop them all on a
    failure, a stop request or the time limit, and write the failure file a silent failure lacks."""
    hosts, last_sync = job.hosts, 0.0

    def sync_checkpoints():
        nonlocal last_sync
        if time.monotonic() - last_sync >= CHECKPOINT_SYNC_S:
            for h in hosts:
                folder.copy_tree(h.dir / "checkpoints", job.store)
            last_sync = time.monotonic()

    started = time.perf_counter()
    if job.install:
        for h in hosts:
            cwd = h.dir / "input" / "data" / "code"
            exit_code, h.install_seconds = container.install_requirements(Path(h.command[0]), cwd, h.log)
            log(f"{h.name}: requirements installed in {h.install_seconds} s" if exit_code == 0
                else f"{h.name}: installing requirements failed (exit code {exit_code}); see {h.log}")
            if exit_code != 0:
                h.exit_code = exit_code
                h.failure_file.write_text(f"{h.name}: installing requirements.txt failed with exit code {exit_code}; "
                                          f"see {h.log}\n")
                return _Outcome(first_failed=h, timed_out=False, stop_signal=stop.signal,
                                wall_seconds=round(time.perf_counter() - started, 3))
    with held(hosts):  # an error here, too, ends every process the hosts started
        for h in hosts:
            start(h, cwd=h.dir / "input" / "data" / "code")  # the driver's `cd /opt/ml/input/data/code`
        first_failed, timed_out = supervise(hosts, max_run_s, stop, sync_checkpoints)
    wall = round(time.perf_counter() - started, 3)
    for h in hosts:
        h.exit_code = h.process.wait()
        for t in h.threads:
            t.join(timeout=5)
        if h.exit_code != 0 and not h.stopped and not h.failure_reason():
            # What the driver's error trap writes when the script left no reason of its own.
            h.failure_file.write_text(f"{h.name}: training script exited with code {h.exit_code}; see {h.log}\n")

    for h in hosts:
        folder.copy_tree(h.dir / "checkpoints", job.store)
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
        clashes = folder.pack([h.dir / "model" for h in hosts], model_artifact)
        if clashes:
            warnings.append(f"model files written by more than one host (first kept): {', '.join(sorted(set(clashes)))}")
    output_artifact = job.dir / "output.tar.gz"
    folder.pack([h.dir / "output" / "data" for h in hosts], output_artifact)

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

"""Run a training job the way SageMaker would, on this machine, without Docker
(`python launch/submit.py --local`): the folder `jobs/<job-name>/` holds the staged code, one
/opt/ml per host (`launch.jobs.container`), each host's log, the checkpoint store
(`launch.jobs.folder`), model.tar.gz, output.tar.gz and summary.json (README, "Local SageMaker
emulation"). Each host is a subprocess supervised by `launch.jobs.processes`.
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
from launch.jobs import code, container, folder, s3data, wheelhouse
from launch.jobs.processes import Host, StopRequest, held, start, supervise
from launch.jobs.spec import JobSpec
from titanic_lightning.contracts import METRICS_FILE
from titanic_lightning.errors import UsageError
from titanic_lightning.io.clean import record_made


@dataclass
class _Job:
    """A laid-out job, ready to start, and once its hosts have ended, how they ended."""

    name: str
    dir: Path
    store: Path
    hosts: list[Host]
    install: bool = False  # each host installs requirements.txt into its own environment first
    first_failed: Host | None = None
    timed_out: bool = False
    wall_seconds: float = 0.0


def run(spec: JobSpec, data_dir: Path, jobs_dir: Path, timeout_s: float | None = None,
        stop: StopRequest | None = None, container_venv: bool = False) -> dict:
    """Emulate the job; return its summary. A signal `stop` caught before the hosts start stops them once they do."""
    max_run_s = timeout_s or spec.max_run_s
    stop = stop or StopRequest()
    with stop.installed():
        job = lay_out_job(spec, data_dir, jobs_dir, container_venv=container_venv)
        try:
            supervise_job(job, max_run_s, stop)
            return summarise(job, spec, stop.signal, max_run_s)
        finally:  # the hosts have ended: what is in the job folder now is the job's (see `make clean`)
            with contextlib.suppress(OSError, UsageError):  # unrecorded, the files merely outlive `make clean`
                record_made(job.dir, "--jobs-dir", "submit")


def lay_out_job(spec: JobSpec, data_dir: Path, jobs_dir: Path, container_venv: bool = False) -> _Job:
    """The job folder: staged code (and wheels), logs, the checkpoint store (a resumed job's copied
    in), and one /opt/ml per host (with `container_venv`, its own Python environment too)."""
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
    store = job_dir / folder.STORE
    store.mkdir()
    if resumed is not None:
        folder.copy_tree(resumed, store)
        log(f"checkpoints of {spec.resume} ({resumed}) restored on every host")
    hosts = []
    for name in container.hosts_for(spec.instance_count):
        host_dir = job_dir / name
        channels = container.lay_out_host(host_dir, spec, name, data_dir, code_dir, wheels_dir)
        folder.copy_tree(store, host_dir / "checkpoints")
        sm = container.sagemaker_env(spec, job_name, name, host_dir, channels, port)
        python = str(container.host_venv(host_dir / "venv", base_python)) if base_python is not None else None
        env = container.process_env(sm, code_dir, spec.distributed, checkpoint_dir=host_dir / "checkpoints")
        hosts.append(Host(name=name, dir=host_dir, command=container.host_command(spec, sm, python), env=env,
                          log=job_dir / "logs" / f"{name}.log"))
    if spec.gpu and int(hosts[0].env.get("SM_NUM_GPUS", "0")) == 0:
        log(f"note: {spec.instance_type} has a GPU, this machine has none: the hosts train on CPU")
    log(f"running: {' '.join(hosts[0].command)}")
    return _Job(name=job_name, dir=job_dir, store=store, hosts=hosts, install=base_python is not None)


def supervise_job(job: _Job, max_run_s: float, stop: StopRequest) -> None:
    """Run the hosts (after their installs) until all end, one fails, `stop` or `max_run_s`, copying their checkpoints
    to the store as they run and once they end; write the failure file a silent failure lacks."""
    started = time.perf_counter()

    def sync_checkpoints():
        for h in job.hosts:
            folder.copy_tree(h.dir / "checkpoints", job.store)

    for h in (job.hosts if job.install else []):
        exit_code, h.install_seconds = container.install_requirements(Path(h.command[0]), h.dir / "input/data/code", h.log)
        log(f"{h.name}: requirements installed in {h.install_seconds} s" if exit_code == 0
            else f"{h.name}: installing requirements failed (exit code {exit_code}); see {h.log}")
        if exit_code != 0:
            h.exit_code, job.first_failed = exit_code, h
            h.failure_file.write_text(f"{h.name}: installing requirements.txt failed with exit code {exit_code}; see {h.log}\n")
            job.wall_seconds = round(time.perf_counter() - started, 3)
            return
    with held(job.hosts):  # an error here, too, ends every process the hosts started
        for h in job.hosts:
            start(h, cwd=h.dir / "input" / "data" / "code")  # the driver's `cd /opt/ml/input/data/code`
        job.first_failed, job.timed_out = supervise(job.hosts, max_run_s, stop, sync_checkpoints)
    job.wall_seconds = round(time.perf_counter() - started, 3)
    for h in job.hosts:
        h.exit_code = h.process.wait()
        h.pump.join(timeout=5)
        if h.exit_code != 0 and not h.stopped and not h.failure_reason():
            # What the driver's error trap writes when the script left no reason of its own.
            h.failure_file.write_text(f"{h.name}: training script exited with code {h.exit_code}; see {h.log}\n")
    sync_checkpoints()


def _metrics(hosts: list[Host]) -> dict | None:
    """The first host's metrics file; None where there is none, or it is not JSON."""
    path = next((p for p in (h.dir / "model" / METRICS_FILE for h in hosts) if p.is_file()), None)
    try:
        return json.loads(path.read_text()) if path is not None else None
    except json.JSONDecodeError:
        return None


def summarise(job: _Job, spec: JobSpec, stop_signal: int | None, max_run_s: float) -> dict:
    """The job's status and reason, model.tar.gz (when it completed), output.tar.gz, and summary.json."""
    hosts, failed = job.hosts, job.first_failed
    stopped_by = signal.Signals(stop_signal).name if stop_signal is not None else None
    status, reason = "Completed", None
    if failed is not None:
        status, reason = "Failed", failed.failure_reason() or f"{failed.name} exited with code {failed.exit_code}"
    elif job.timed_out:
        status, reason = "Stopped", f"MaxRuntimeExceeded: the job ran past {max_run_s} s"
    elif stopped_by is not None:
        status = "Stopped"
        reason = f"stopped by {stopped_by}; add --resume {job.name} to the command to continue from the checkpoints in {job.store}"
    warnings, model_artifact = [], None
    if status == "Completed":
        model_artifact = job.dir / "model.tar.gz"
        if clashes := folder.pack([h.dir / "model" for h in hosts], model_artifact):
            warnings.append(f"model files written by more than one host (first kept): {', '.join(sorted(set(clashes)))}")
    output_artifact = job.dir / "output.tar.gz"
    folder.pack([h.dir / "output" / "data" for h in hosts], output_artifact)
    summary = {
        "status": status, "job_name": job.name, "job_dir": str(job.dir),
        "model_artifact": str(model_artifact) if model_artifact else None, "output_artifact": str(output_artifact),
        "wall_seconds": job.wall_seconds, "failure_reason": reason, "stopped_by_signal": stopped_by,
        "checkpoints": str(job.store), "resumed_from": spec.resume,
        "instance_type": spec.instance_type, "instance_count": spec.instance_count, "spot": spec.spot,
        "distributed": spec.distributed, "network_isolation": spec.network_isolation, "wheelhouse": spec.uses_wheelhouse,
        "container_venv": job.install, "hyperparameters": spec.hyperparameters, "command": hosts[0].command,
        "hosts": [{"host": h.name, "exit_code": h.exit_code, "stopped_by_launcher": h.stopped,
                   "install_seconds": h.install_seconds, "failure_reason": h.failure_reason(), "log": str(h.log)}
                  for h in hosts],
        "metrics": _metrics(hosts), "warnings": warnings,
    }
    (job.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

"""A SLURM job of the training entry: `launch/slurm.sbatch` with this job's `#SBATCH` values and
entry flags written in (what `--dry-run` prints), submitted with `sbatch`, followed with `scontrol`
(no accounting database needed), and recorded as a run (`mode` "slurm").

    import launch

    run = launch.run_slurm(tasks_per_node=2, hyperparameters={"epochs": 5})   # waits; runs/slurm-<id>.json
    later = launch.run_slurm(nodes=2, tasks_per_node=4, gpus_per_node=4, partition="gpu", wait=False)
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from launch.api import Run
from launch.console import log
from launch.jobs.checks import parse_hyperparameters
from launch.options import hp_pairs
from launch.records import report
from titanic_lightning.contracts import CHECKPOINT_FILE, FINAL_LINE, METRICS_FILE, MODEL_FILE, SLURM_LOG, SPLITS, npz_name
from titanic_lightning.errors import Interrupted, UsageError

SCRIPT = Path(__file__).parents[1] / "slurm.sbatch"
JOB_DIR = "jobs/slurm-{job_id}"  # as the script names it, relative to the folder the job is submitted from
LOG_FILE = SLURM_LOG
# States after which SLURM runs the job no more (a requeued job goes back to PENDING instead).
FINAL_STATES = {"COMPLETED": "Completed", "FAILED": "Failed", "CANCELLED": "Stopped", "TIMEOUT": "Failed",
                "NODE_FAIL": "Failed", "OUT_OF_MEMORY": "Failed", "BOOT_FAIL": "Failed", "DEADLINE": "Failed"}
# SLURM's --time forms: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]].
# The batch script asks for SIGUSR1 90 s before the limit: a job needs some time beyond that to train.
MIN_TIME_S = 180
TIME = re.compile(r"^(\d+)(:\d{1,2}){0,2}$|^\d+-\d+(:\d{1,2}){0,2}$")


@dataclass(frozen=True)
class SlurmSpec:
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    partition: str | None = None
    time: str = "30"
    hyperparameters: dict[str, str] = field(default_factory=dict)
    data: Path | None = None
    resume: str | None = None


def time_seconds(text: str) -> int:
    """A SLURM --time value (one TIME matches) in seconds."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days or len(parts) == 3:  # [days-]hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:  # minutes[:seconds]
        hours, minutes, seconds = 0, *(parts + [0])[:2]
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def check_spec(spec: SlurmSpec) -> SlurmSpec:
    """The values alone, with no cluster at hand: counts, time, data channels, resume id."""
    for flag, value, least in (("--nodes", spec.nodes, 1), ("--tasks-per-node", spec.tasks_per_node, 1),
                               ("--gpus-per-node", spec.gpus_per_node, 0), ("--cpus-per-task", spec.cpus_per_task, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise UsageError(f"{flag} {value}: must be a whole number of at least {least}")
    if spec.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", spec.partition):
        raise UsageError(f"--partition {spec.partition!r}: not a partition name")
    if spec.resume is not None and not re.fullmatch(r"\d+", str(spec.resume)):
        raise UsageError(f"--resume {spec.resume!r}: give the SLURM job id of the job to continue (a number)")
    for split in ("train", "val") if spec.data is not None else ():
        if not (spec.data / npz_name(split)).is_file():
            raise UsageError(f"--data {spec.data}: no {npz_name(split)} there; prepare it with "
                             f"python -m entry.prepare --out {spec.data}")
    text = str(spec.time).strip()
    if not TIME.match(text) or not any(c in "123456789" for c in text):
        raise UsageError(f"--time {text!r}: not a SLURM time limit; give minutes (30), HH:MM:SS (01:30:00) "
                         "or D-HH:MM (1-12:00)")
    if time_seconds(text) < MIN_TIME_S:
        raise UsageError(f"--time {text}: shorter than {MIN_TIME_S // 60} minutes; the job is warned 90 s before "
                         "its limit (SIGUSR1) and would be requeued as soon as it starts")
    return spec


def check_cluster(spec: SlurmSpec) -> None:
    """What the cluster says (`sinfo`): the partition exists and its nodes hold the tasks and GPUs."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UsageError("sbatch is not on PATH: run this where SLURM's commands are (a login node), "
                         "or add --dry-run to print the batch script")
    listed = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G|%D"], capture_output=True, text=True, timeout=60)
    partitions: dict[str, tuple[int, int, int]] = {}  # name: (CPUs per node, GPUs per node, nodes)
    default = None
    for line in listed.stdout.splitlines():
        name, cpus, gres, nodes = line.split("|")
        if name.endswith("*"):
            name = default = name[:-1]
        gpus = sum(int(m) for m in re.findall(r"gpu(?::[^:(,]+)?:(\d+)", gres))
        old = partitions.get(name, (0, 0, 0))
        partitions[name] = (max(old[0], int(cpus.rstrip("+") or 0)), max(old[1], gpus), old[2] + int(nodes or 0))
    name = spec.partition or default
    if name not in partitions:
        known = ", ".join(sorted(partitions)) or "none"
        raise UsageError(f"--partition {spec.partition or '(default)'}: no such partition; sinfo lists {known}")
    cpus, gpus, nodes = partitions[name]
    if spec.nodes > nodes:
        raise UsageError(f"--nodes {spec.nodes}: partition {name} has {nodes} node(s)")
    if spec.tasks_per_node * spec.cpus_per_task > cpus:
        raise UsageError(f"--tasks-per-node {spec.tasks_per_node} x --cpus-per-task {spec.cpus_per_task}: more CPUs "
                         f"than a node of partition {name} has ({cpus})")
    if spec.gpus_per_node > gpus:
        raise UsageError(f"--gpus-per-node {spec.gpus_per_node}: a node of partition {name} has {gpus} GPU(s)")


def batch_script(spec: SlurmSpec) -> str:
    """launch/slurm.sbatch with this job's `#SBATCH` values, Python and entry flags written in."""
    text = SCRIPT.read_text(encoding="utf-8")
    values = {"nodes": spec.nodes, "ntasks-per-node": spec.tasks_per_node, "gpus-per-node": spec.gpus_per_node,
              "cpus-per-task": spec.cpus_per_task, "time": spec.time}
    for option, value in values.items():
        text, count = re.subn(rf"^#SBATCH --{option}=.*$", f"#SBATCH --{option}={value}", text, flags=re.M)
        assert count == 1, option  # the script's own lines: a test checks each is there once
    if spec.partition:
        text = re.sub(r"^(#SBATCH --job-name=.*)$", rf"\1\n#SBATCH --partition={spec.partition}", text, flags=re.M)
    flags = []
    for split in SPLITS if spec.data is not None else []:
        if (path := spec.data.resolve() / npz_name(split)).is_file():
            flags += [f"--{split}", str(path)]
    for key, value in spec.hyperparameters.items():
        flags += [f"--{key}", value]
    python = shlex.quote(sys.executable)
    return re.sub(r"^(srun .*) python -m entry\.train(.*)$", lambda m: f"{m.group(1)} {python} -m entry.train{m.group(2)}",
                  text, flags=re.M | re.S).replace('"$@"', " ".join(shlex.quote(f) for f in flags))


def resume_source(spec: SlurmSpec, cwd: Path) -> Path | None:
    """The last.ckpt that `--resume JOBID` continues from (it must exist), or None."""
    if spec.resume is None:
        return None
    source = cwd / JOB_DIR.format(job_id=spec.resume) / "checkpoints" / CHECKPOINT_FILE
    if not source.is_file():
        raise UsageError(f"--resume {spec.resume}: {source} does not exist; nothing to continue from")
    return source


def submit(spec: SlurmSpec, cwd: Path) -> str:
    """Submit the job from `cwd`; its id. A resumed job is held until the old job's last.ckpt is in its folder."""
    resume_from = resume_source(spec, cwd)
    done = subprocess.run(["sbatch", "--parsable", *(["--hold"] if resume_from else [])], input=batch_script(spec),
                          capture_output=True, text=True, cwd=cwd, timeout=120)
    if done.returncode != 0:
        raise UsageError(f"sbatch refused the job: {' '.join(done.stderr.split())}")
    job_id = done.stdout.strip().split(";")[0]
    if resume_from:
        target = cwd / JOB_DIR.format(job_id=job_id) / "checkpoints"
        target.mkdir(parents=True)
        shutil.copy2(resume_from, target / CHECKPOINT_FILE)
        subprocess.run(["scontrol", "release", job_id], check=True, timeout=60)
    return job_id


def job_state(job_id: str) -> dict[str, str]:
    """scontrol's fields of the job (JobState, ExitCode, RunTime, Restarts, ...); {} once SLURM forgot it."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=60)
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field) if shown.returncode == 0 else {}


def follow(job_id: str, cwd: Path, echo=None) -> dict[str, str]:
    """Wait for the job to end, passing each new line of its log to `echo`; scontrol's last fields."""
    log_file, offset, last = cwd / LOG_FILE.format(job_id=job_id), 0, {}
    while True:
        state = job_state(job_id) or last
        if log_file.exists() and echo is not None:
            chunk = log_file.read_bytes()[offset:]
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                echo(line)
        if not state or state.get("JobState") in FINAL_STATES:
            return state
        last = state
        time.sleep(1.0)


def record(spec: SlurmSpec, job_id: str, cwd: Path, state: dict[str, str] | None) -> dict:
    """The run record (`launch.records.report`'s shape, `mode` "slurm") of the job; status "Submitted" without a state."""
    job_dir = cwd / JOB_DIR.format(job_id=job_id)
    metrics_file = job_dir / "model" / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if state is not None and metrics_file.is_file() else {}
    final = {k: metrics[k] for k in FINAL_LINE if isinstance(metrics.get(k), (int, float))}
    state_fields = state or {}
    slurm_state, run_time = state_fields.get("JobState"), state_fields.get("RunTime", "")
    wall_seconds = float(time_seconds(run_time)) if re.fullmatch(r"(\d+-)?\d+:\d+:\d+", run_time) else None  # [D-]HH:MM:SS
    status = "Submitted" if state is None else FINAL_STATES.get(slurm_state, "Completed" if final else "Failed")
    if status == "Completed" and not final:
        status = "Failed"  # SLURM's COMPLETED with no metrics: the entry did not finish its work
    return report.new_record(
        final, mode="slurm", job_name=f"slurm-{job_id}", status=status,
        failure_reason=None if status in ("Completed", "Submitted") else f"SLURM state {slurm_state}",
        instance_type=f"slurm:{spec.partition or 'default'}", instance_count=spec.nodes, spot=False,
        training_seconds=metrics.get("fit_seconds_total"), wall_seconds=wall_seconds,
        model_artifact=str(job_dir / "model" / MODEL_FILE) if final else None, job_id=job_id,
        tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus_per_node,
        restarts=int(state_fields.get("Restarts", 0) or 0), job_dir=str(job_dir),
        hyperparameters=dict(spec.hyperparameters))


def run_slurm(*, nodes: int = 1, tasks_per_node: int = 1, gpus_per_node: int = 0, cpus_per_task: int = 1,
              partition: str | None = None, time: str | int = "30", hyperparameters: dict | None = None,
              data: str | Path | None = None, resume: str | int | None = None, wait: bool = True,
              runs_dir: str | Path | None = "runs", cwd: str | Path = ".", echo=None):
    """Submit the training entry to SLURM (`python launch/slurm.py`) from `cwd`, its hyperparameters
    checked by the entry's parser first; a `launch.Run`. With `wait`, follow the job to its end (its
    log lines to `echo`) and record it in `runs_dir/slurm-<job id>.json`; else status "Submitted"."""
    hps = parse_hyperparameters(hp_pairs("run_slurm", hyperparameters))
    spec = check_spec(SlurmSpec(nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
                                cpus_per_task=cpus_per_task, partition=partition, time=str(time), hyperparameters=hps,
                                data=None if data is None else Path(data), resume=None if resume is None else str(resume)))
    return run(spec, wait, None if runs_dir is None else Path(runs_dir), Path(cwd), echo)


def run(spec: SlurmSpec, wait: bool, runs_dir: Path | None, cwd: Path, echo=None):
    """Check the cluster, submit `spec` from `cwd`, with `wait` follow it and record it in `runs_dir`; the `launch.Run`."""
    check_cluster(spec)
    job_id = submit(spec, cwd)
    log(f"submitted SLURM job {job_id}: {spec.nodes} node(s) x {spec.tasks_per_node} task(s); "
        f"log {LOG_FILE.format(job_id=job_id)}, outputs in {JOB_DIR.format(job_id=job_id)}/")
    if not wait:
        return Run.of(record(spec, job_id, cwd, None))
    try:
        state = follow(job_id, cwd, echo=echo)
    except KeyboardInterrupt:  # stops the following, not the job, as on SageMaker
        raise Interrupted(f"interrupted; SLURM job {job_id} goes on (scancel {job_id} stops it), its log is "
                          f"{LOG_FILE.format(job_id=job_id)}") from None
    done = record(spec, job_id, cwd, state)
    path = report.save(done, runs_dir) if runs_dir is not None else None
    return Run.of(done, path)

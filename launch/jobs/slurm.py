"""A SLURM job of the training entry: the batch script `launch/slurm.sbatch` with this job's values,
submitted with `sbatch`, followed with `scontrol`, and recorded as a run (`mode` "slurm").

    import launch

    run = launch.run_slurm(tasks_per_node=2, hyperparameters={"epochs": 5})   # waits; runs/slurm-<id>.json
    later = launch.run_slurm(nodes=2, tasks_per_node=4, gpus_per_node=4, partition="gpu", wait=False)

The job is the same script a user submits by hand (`sbatch launch/slurm.sbatch`), written out with
the chosen `#SBATCH` values and the entry's flags, so `--dry-run` prints exactly what is submitted.
It is submitted with `sbatch` itself rather than through submitit: the job runs a command
(`srun python -m entry.train`), not a pickled Python function, and `scontrol` follows it without the
accounting database that submitit's polling (`sacct`) needs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from titanic_lightning.contracts import CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, SPLITS, npz_name
from titanic_lightning.errors import Interrupted, UsageError

SCRIPT = Path(__file__).parents[1] / "slurm.sbatch"
JOB_DIR = "jobs/slurm-{job_id}"  # as the script names it, relative to the folder the job is submitted from
LOG_FILE = "slurm-titanic-{job_id}.out"
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


def check_time(text: str, flag: str = "--time") -> str:
    text = str(text).strip()
    if not TIME.match(text) or not any(c in "123456789" for c in text):
        raise UsageError(f"{flag} {text!r}: not a SLURM time limit; give minutes (30), HH:MM:SS (01:30:00) "
                         "or D-HH:MM (1-12:00)")
    if time_seconds(text) < MIN_TIME_S:
        raise UsageError(f"{flag} {text}: shorter than {MIN_TIME_S // 60} minutes; the job is warned 90 s before "
                         "its limit (SIGUSR1) and would be requeued as soon as it starts")
    return text


def time_seconds(text: str) -> int:
    """A SLURM --time value (one TIME matches) in seconds."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    else:  # minutes, minutes:seconds, hours:minutes:seconds
        hours, minutes, seconds = ([0, 0] + parts)[-3:] if len(parts) == 3 else (0, *(parts + [0])[:2])
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
    if spec.data is not None:
        for split in ("train", "val"):
            if not (spec.data / npz_name(split)).is_file():
                raise UsageError(f"--data {spec.data}: no {npz_name(split)} there; prepare it with "
                                 f"python -m entry.prepare --out {spec.data}")
    check_time(spec.time)
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


def entry_flags(spec: SlurmSpec) -> list[str]:
    flags = []
    if spec.data is not None:
        for split in SPLITS:
            path = spec.data.resolve() / npz_name(split)
            if path.is_file():
                flags += [f"--{split}", str(path)]
    for key, value in spec.hyperparameters.items():
        flags += [f"--{key}", value]
    return flags


def batch_script(spec: SlurmSpec, python: str | None = None) -> str:
    """launch/slurm.sbatch with this job's `#SBATCH` values, Python and entry flags written in."""
    text = SCRIPT.read_text(encoding="utf-8")
    values = {"nodes": spec.nodes, "ntasks-per-node": spec.tasks_per_node, "gpus-per-node": spec.gpus_per_node,
              "cpus-per-task": spec.cpus_per_task, "time": spec.time}
    for option, value in values.items():
        text, count = re.subn(rf"^#SBATCH --{option}=.*$", f"#SBATCH --{option}={value}", text, flags=re.M)
        assert count == 1, option  # the script's own lines: a test checks each is there once
    if spec.partition:
        text = re.sub(r"^(#SBATCH --job-name=.*)$", rf"\1\n#SBATCH --partition={spec.partition}", text, flags=re.M)
    flags = " ".join(shlex.quote(f) for f in entry_flags(spec))
    python = shlex.quote(python or sys.executable)
    return re.sub(r"^(srun .*) python -m entry\.train(.*)$", lambda m: f"{m.group(1)} {python} -m entry.train{m.group(2)}",
                  text, flags=re.M | re.S).replace('"$@"', flags)


def resume_source(spec: SlurmSpec, cwd: Path) -> Path | None:
    """The last.ckpt that `--resume JOBID` continues from (it must exist), or None."""
    if spec.resume is None:
        return None
    source = cwd / JOB_DIR.format(job_id=spec.resume) / "checkpoints" / CHECKPOINT_FILE
    if not source.is_file():
        raise UsageError(f"--resume {spec.resume}: {source} does not exist; nothing to continue from")
    return source


def submit(spec: SlurmSpec, cwd: Path) -> str:
    """Submit the job from `cwd`; its id. A resumed job is held until the old job's last.ckpt is in
    its own checkpoint folder."""
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
    if shown.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in shown.stdout.split() if "=" in field)


def follow(job_id: str, cwd: Path, poll_s: float = 1.0, echo=None) -> dict[str, str]:
    """Wait for the job to end, passing each new line of its log to `echo`; scontrol's last fields."""
    log, offset, last = cwd / LOG_FILE.format(job_id=job_id), 0, {}
    while True:
        state = job_state(job_id) or last
        if log.exists() and echo is not None:
            with log.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                echo(line)
        if not state or state.get("JobState") in FINAL_STATES:
            return state
        last = state
        time.sleep(poll_s)


def _seconds(run_time: str | None) -> float | None:
    """scontrol's RunTime ([D-]HH:MM:SS) in seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", run_time or "")
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def record(spec: SlurmSpec, job_id: str, cwd: Path, state: dict[str, str] | None) -> dict:
    """The run record (`launch.records.report`'s shape, `mode` "slurm") of the job; status "Submitted" without a state."""
    import json

    from launch.records.report import new_record
    from titanic_lightning.contracts import FINAL_LINE

    job_dir = cwd / JOB_DIR.format(job_id=job_id)
    metrics_file = job_dir / "model" / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if state is not None and metrics_file.is_file() else {}
    final = {k: metrics[k] for k in FINAL_LINE if isinstance(metrics.get(k), (int, float))}
    slurm_state = (state or {}).get("JobState")
    status = "Submitted" if state is None else FINAL_STATES.get(slurm_state, "Completed" if final else "Failed")
    if status == "Completed" and not final:
        status = "Failed"  # SLURM's COMPLETED with no metrics: the entry did not finish its work
    return new_record(
        final, mode="slurm", job_name=f"slurm-{job_id}", status=status,
        failure_reason=None if status in ("Completed", "Submitted") else f"SLURM state {slurm_state}",
        instance_type=f"slurm:{spec.partition or 'default'}", instance_count=spec.nodes, spot=False,
        training_seconds=metrics.get("fit_seconds_total"), wall_seconds=_seconds((state or {}).get("RunTime")),
        model_artifact=str(job_dir / "model" / MODEL_FILE) if final else None, job_id=job_id,
        tasks_per_node=spec.tasks_per_node, gpus_per_node=spec.gpus_per_node,
        restarts=int((state or {}).get("Restarts", 0) or 0), job_dir=str(job_dir),
        hyperparameters=dict(spec.hyperparameters))


def run_slurm(*, nodes: int = 1, tasks_per_node: int = 1, gpus_per_node: int = 0, cpus_per_task: int = 1,
              partition: str | None = None, time: str | int = "30", hyperparameters: dict | None = None,
              data: str | Path | None = None, resume: str | int | None = None, wait: bool = True,
              runs_dir: str | Path | None = "runs", cwd: str | Path = ".", echo=None):
    """Submit the training entry to SLURM (`python launch/slurm.py`), from `cwd`; returns a `launch.Run`.

    `hyperparameters` are checked with the entry's own parser before anything is submitted. With
    `wait`, follow the job to its end (its log lines go to `echo`), record it in
    `runs_dir/slurm-<job id>.json` and return it; without, return at once with status "Submitted".
    """
    from launch.jobs.checks import parse_hyperparameters
    from launch.options import hp_pairs

    hps = parse_hyperparameters(hp_pairs("run_slurm", hyperparameters))
    spec = check_spec(SlurmSpec(nodes=nodes, tasks_per_node=tasks_per_node, gpus_per_node=gpus_per_node,
                                cpus_per_task=cpus_per_task, partition=partition, time=str(time), hyperparameters=hps,
                                data=None if data is None else Path(data), resume=None if resume is None else str(resume)))
    return run(spec, wait, None if runs_dir is None else Path(runs_dir), Path(cwd), echo)


def run(spec: SlurmSpec, wait: bool, runs_dir: Path | None, cwd: Path, echo=None):
    """Check the cluster, submit the checked `spec` from `cwd`, and with `wait` follow it to its end and
    record it in `runs_dir`; the `launch.Run`."""
    from launch.api import Run
    from launch.console import log
    from launch.records import report

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

"""Train the Titanic MLP on a SLURM cluster: one DDP run over nodes x tasks per node.

    python launch/slurm.py --tasks-per-node 2 --wait --hp epochs=5     # 1 node x 2 processes; follow it to the end
    python launch/slurm.py --nodes 2 --tasks-per-node 4 --gpus-per-node 4 --partition gpu --time 120
    python launch/slurm.py --data data --hp learning_rate=0.003 --dry-run   # print the batch script; submit nothing
    python launch/slurm.py --resume 1234 --wait                       # continue job 1234 from its last.ckpt
    python launch/submit.py --compare runs/*.json                     # SLURM runs beside local and SageMaker ones

The job is `launch/slurm.sbatch` with these values written into its `#SBATCH` lines (the same
script `sbatch launch/slurm.sbatch` submits by hand); it writes to jobs/slurm-<job id>/ and logs to
slurm-titanic-<job id>.out. A job that SLURM requeues (preemption, `scontrol requeue`, or the
SIGUSR1 warning 90 s before its time limit) continues from its last.ckpt; a new submission starts
afresh unless --resume. With --wait the run is recorded in runs/slurm-<job id>.json. Mistakes end
as one line on stderr with exit code 2, before anything is submitted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.console import command_parser, log, path  # noqa: E402
from launch.options import integer  # noqa: E402
from titanic_lightning.command import run_command  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = command_parser("python launch/slurm.py", __doc__)
    p.add_argument("--nodes", type=integer, default=1, metavar="N", help="nodes (default 1)")
    p.add_argument("--tasks-per-node", type=integer, default=1, metavar="K",
                   help="processes per node: one per GPU, or CPU processes (default 1)")
    p.add_argument("--gpus-per-node", type=integer, default=0, metavar="G", help="GPUs per node (default 0)")
    p.add_argument("--cpus-per-task", type=integer, default=1, metavar="C", help="CPUs per process (default 1)")
    p.add_argument("--partition", metavar="P", help="SLURM partition (default: the cluster's default)")
    p.add_argument("--time", default="30", metavar="MIN", help="time limit: minutes, HH:MM:SS or D-HH:MM (default 30)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="a flag of python -m entry.train, e.g. --hp epochs=50 (repeatable)")
    p.add_argument("--data", type=path, metavar="DIR", help="prepared channels (train_data.npz, ...); default: the entry's data/")
    p.add_argument("--resume", metavar="JOBID", help="continue that job from jobs/slurm-JOBID/checkpoints/last.ckpt")
    p.add_argument("--wait", action="store_true", help="follow the job's log to its end and record it in --runs-dir")
    p.add_argument("--dry-run", action="store_true", help="print the batch script that would be submitted; submit nothing")
    p.add_argument("--runs-dir", type=path, default="runs", metavar="DIR", help="where finished jobs are recorded (default runs)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def main(argv: list[str]) -> None:
    from launch.jobs import slurm as slurm_job
    from launch.jobs.checks import parse_hyperparameters
    from launch.records import report

    args = parser().parse_args(argv)
    spec = slurm_job.check_spec(slurm_job.SlurmSpec(
        nodes=args.nodes, tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task, partition=args.partition, time=args.time,
        hyperparameters=parse_hyperparameters(args.hp), data=Path(args.data) if args.data else None, resume=args.resume))
    if args.dry_run:  # checked against the cluster too where SLURM's commands are
        if shutil.which("sinfo") and shutil.which("sbatch"):
            slurm_job.check_cluster(spec)
        slurm_job.resume_source(spec, Path.cwd())
        print(slurm_job.batch_script(spec), end="")
        return
    run = slurm_job.run(spec, args.wait, Path(args.runs_dir), Path.cwd(), echo=log)
    if not args.wait:
        print(json.dumps(run.record), flush=True)
        return
    print(report.human(run.record), flush=True)
    print(f"recorded in {run.record_path}", flush=True)
    if run.status != "Completed":
        sys.exit(1)


if __name__ == "__main__":
    run_command(main)

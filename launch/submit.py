"""Train the Titanic MLP as a SageMaker training job, or emulate one here.

    python launch/submit.py                          # ml.m5.large, waits, prints status/time/cost
    python launch/submit.py --gpu                    # ml.g4dn.xlarge
    python launch/submit.py --instance-count 2       # 2 x ml.m5.large, torchrun across instances
    python launch/submit.py --spot --max-run 1800    # managed spot: a restart resumes from its checkpoints
    python launch/submit.py --resume JOB_NAME        # continue a stopped or failed job from its checkpoints
    python launch/submit.py --hp epochs=200 --hp learning_rate=0.003 --no-wait
    python launch/submit.py --dry-run                # the exact CreateTrainingJob request; no AWS call, no credentials
    python launch/submit.py --local --instance-count 2   # SageMaker's layout and SM_* env, no Docker
    python launch/submit.py --local --json           # the job's summary as one JSON object instead of lines
    python launch/submit.py --network-isolation      # no network in the container: requirements from a wheelhouse
    python launch/submit.py --local --container-venv --wheelhouse   # install as the container does, timed
    python launch/submit.py --compare runs/*.json    # one table: time, billable seconds, cost, accuracy
    python launch/submit.py --compare runs/*.json jobs/*/summary.json tuning/*/tuning.json --plot runs/compare.png

A real submission needs AWS credentials, a role (`--role`, else $SAGEMAKER_ROLE, else the
execution role when run inside SageMaker) and a bucket (`--bucket`, else the session's default).
Mistakes end as one line on stderr with exit code 2, before anything is uploaded.
Every finished job, `--local` ones included, is recorded in `runs/<job>.json`. The same functions
are the Python API: `import launch` (see `launch/api.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run by path (`python launch/submit.py`): make the repository importable as the module form is.
    # Only what parsing needs is imported here: the rest comes once run_command handles Ctrl-C.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.console import command_parser, launcher_errors, log, path  # noqa: E402
from launch.options import add_job_arguments, spec_from_args  # noqa: E402
from titanic_lightning.command import run_command  # noqa: E402
from titanic_lightning.errors import UsageError  # noqa: E402


def parser() -> argparse.ArgumentParser:
    p = command_parser("python launch/submit.py", __doc__)
    add_job_arguments(p)
    p.add_argument("--resume", metavar="JOB_NAME",
                   help="continue that stopped or failed job from its checkpoints (same --hp and data); "
                        "without it every job trains afresh")
    p.add_argument("--no-wait", action="store_true", help="submit and return without following the job")
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--dry-run", action="store_true",
                   help="print the CreateTrainingJob request the SDK would send (JSON, stdout) and a one-line "
                        "summary (stderr); no AWS call, no credentials")
    p.add_argument("--json", action="store_true",
                   help="when the job ends, print one JSON object instead of the summary lines (--local: the job's "
                        "summary.json; on SageMaker: the run record)")
    modes.add_argument("--local", action="store_true", help="run the job here with SageMaker's layout and environment")
    p.add_argument("--container-venv", action="store_true",
                   help="with --local: give each host its own environment holding only what the training image "
                        "holds, and install requirements.txt into it as the container does (timed)")
    p.add_argument("--jobs-dir", type=path, default="jobs", metavar="DIR", help="where --local puts job directories (default jobs)")
    p.add_argument("--runs-dir", type=path, default="runs", metavar="DIR", help="where finished jobs are recorded (default runs)")
    p.add_argument("--prices", type=path, metavar="FILE", help="on-demand price table (default launch/prices.json)")
    modes.add_argument("--compare", type=path, nargs="+", metavar="FILE",
                   help="print one table of runs and exit: runs/*.json, jobs/<job>/summary.json, tuning results")
    p.add_argument("--plot", type=path, metavar="FILE",
                   help="with --compare: draw time, cost and accuracy per run into FILE (.png, .svg or .pdf)")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def _spec(args):
    return spec_from_args(args, resume=args.resume)


def dry_run(args) -> None:
    from launch import api
    from launch.jobs import prices, request

    table = prices.load(args.prices)
    # Anything a library prints goes to stderr: stdout carries exactly the request.
    with contextlib.redirect_stdout(sys.stderr):
        spec = _spec(args)
        described = api.dry_run(spec, table)
        created = request.training_job(spec)
    print(json.dumps(created, indent=2))
    # The summary (price, distribution, placeholders), one line on stderr after the request.
    print(json.dumps(described), file=sys.stderr)


def _show(run, as_json: bool, shown: dict, lines: list[str]) -> None:
    """The ended job: `shown` as one JSON object, or the record's summary lines and `lines`."""
    from launch.records import report

    if as_json:
        log(f"recorded in {run.record_path}")
        print(json.dumps(shown, default=str), flush=True)
    else:
        print("\n".join([report.human(run.record), *lines, f"recorded in {run.record_path}"]), flush=True)


def local(args) -> int:
    from launch import api
    from launch.jobs import prices

    table = prices.load(args.prices)
    run = api.run_local(_spec(args), data=args.data, jobs_dir=args.jobs_dir, runs_dir=args.runs_dir, prices=table,
                        container_venv=args.container_venv)
    summary = run.summary
    _show(run, args.json, summary, [f"  job directory:    {summary['job_dir']}",
                                    *(f"  warning:          {w}" for w in summary.get("warnings") or [])])
    if summary["stopped_by_signal"]:
        return 128 + signal.Signals[summary["stopped_by_signal"]].value  # what a shell reports for the signal
    return 0 if summary["status"] == "Completed" else 1


def remote(args) -> int:
    from launch import api
    from launch.jobs import prices

    table = prices.load(args.prices)
    run = api._run_sagemaker(_spec(args), args.data, not args.no_wait, args.runs_dir, table, role_flag=args.role,
                             region_flag=args.region)
    if args.no_wait:
        print(json.dumps({k: v for k, v in run.record.items() if k != "mode"}), flush=True)
        return 0
    _show(run, args.json, run.record, [])
    return 0 if run.status == "Completed" else 1


def compare(args) -> None:
    from launch import api
    from launch.jobs import prices
    from launch.records import charts

    if args.plot:
        charts.check_plot_path(args.plot)  # before anything is read
    comparison = api.compare(args.compare, prices.load(args.prices))
    print(comparison.table, flush=True)
    if args.plot:
        log(f"wrote {comparison.plot(args.plot)}")


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.container_venv and not args.local:
        raise UsageError("--container-venv sets up the hosts of --local: add --local")
    if args.plot and not args.compare:
        raise UsageError("--plot draws the runs of --compare: add --compare FILES")
    if args.compare:
        return compare(args)
    if args.dry_run:
        return dry_run(args)
    code = local(args) if args.local else remote(args)
    if code:
        sys.exit(code)


def _main(argv: list[str]) -> None:
    launcher_errors(main, argv)


if __name__ == "__main__":
    run_command(_main)

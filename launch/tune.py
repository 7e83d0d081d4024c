"""Tune the Titanic MLP's hyperparameters: a SageMaker tuning job, or the same search here.

    python launch/tune.py --dry-run                          # the exact CreateHyperParameterTuningJob request; no AWS call
    python launch/tune.py --max-jobs 20 --max-parallel-jobs 3 # SageMaker: Bayesian search of the default space
    python launch/tune.py --range learning_rate=0.0001:0.1:log --range "hidden_sizes=[64, 32]|[32]" \\
        --objective val_acc --search random --hp epochs=100 --spot
    python launch/tune.py --search grid --range "optimizer=adam|adamw" --range "dropout=0.0|0.2"
    python launch/tune.py --local --trials 20 --parallel 2  # Optuna here: TPE, median pruning

Search space (`--range`, repeatable; NAME is a flag of `python -m entry.train`):
    NAME=LOW:HIGH          continuous for a real flag, integer for an integer flag
    NAME=LOW:HIGH:log      searched on a logarithmic scale (LOW above 0)
    "NAME=A|B|C"           categories, e.g. "hidden_sizes=[64, 32]|[32]"
Without --range: learning_rate=0.0001:0.1:log, batch_size=16:128, dropout=0.0:0.5,
weight_decay=0.000001:0.01:log, "hidden_sizes=[32]|[64, 32]|[128, 64]|[64, 64, 32]"
(less any flag fixed with --hp). Every value is checked with the entry's parser first.

The objective is the value of the entry's `final:` line. Poor trials stop early (SageMaker's Auto
early stopping, or Hyperband's own; median pruning here) unless --no-early-stopping. Waiting, the
command prints the trials sorted by the objective, writes tuning.json and tuning.png into
--out/<tuning name>/, and its last line is the summary as one JSON object (launch/tuning/result.py).
Mistakes end as one line on stderr with exit code 2, before anything starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run by path (`python launch/tune.py`): make the repository importable as the module form is.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.console import command_parser, launcher_errors, path  # noqa: E402
from launch.options import add_job_arguments, integer, spec_from_args  # noqa: E402
from launch.tuning import result as tuning_result  # noqa: E402
from launch.tuning import space  # noqa: E402
from titanic_lightning.command import run_command  # noqa: E402
from titanic_lightning.errors import UsageError  # noqa: E402

# Flags that only mean something on SageMaker, or only here.
SAGEMAKER_ONLY = ("gpu", "instance_type", "instance_count", "spot", "bucket", "role", "region", "max_jobs",
                  "max_parallel_jobs", "no_wait", "dry_run")
LOCAL_ONLY = ("trials", "parallel", "timeout", "prune_after_trials", "keep_models")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds above 0")
    return value


def parser() -> argparse.ArgumentParser:
    p = command_parser("python launch/tune.py", __doc__)
    add_job_arguments(p)
    t = p.add_argument_group("tuning")
    t.add_argument("--range", action="append", default=[], metavar="SPEC", dest="ranges",
                   help="NAME=LOW:HIGH, NAME=LOW:HIGH:log or \"NAME=A|B|C\"; repeatable (default: the default space)")
    t.add_argument("--search", default="bayesian", choices=tuple(space.STRATEGY_NAMES),
                   help="how trials are chosen (default bayesian); grid takes categorical ranges only")
    t.add_argument("--objective", default="val_loss", choices=tuple(space.OBJECTIVES),
                   help="metric to optimise: val_loss minimised, val_acc and val_auroc maximised (default val_loss)")
    t.add_argument("--no-early-stopping", action="store_true", help="let every trial run to its end")
    t.add_argument("--search-seed", type=integer, default=1, metavar="N", help="seed of the search (default 1)")
    t.add_argument("--out", type=path, default="tuning", metavar="DIR",
                   help="tuning.json and tuning.png go into DIR/<name>/ (default tuning)")
    t.add_argument("--runs-dir", type=path, default="runs", metavar="DIR", help="where each trial is recorded (default runs)")
    t.add_argument("--prices", type=path, metavar="FILE", help="on-demand price table (default launch/prices.json)")
    s = p.add_argument_group("on SageMaker")
    s.add_argument("--max-jobs", type=integer, metavar="N",
                   help=f"training jobs in all (default {space.DEFAULT_MAX_JOBS}; grid: every combination)")
    s.add_argument("--max-parallel-jobs", type=integer, metavar="K", help="training jobs at a time (default 1)")
    s.add_argument("--no-wait", action="store_true", help="create the tuning job and return")
    s.add_argument("--dry-run", action="store_true", help="print the CreateHyperParameterTuningJob request the SDK would "
                   "send (JSON, stdout) and a one-line summary (stderr); no AWS call")
    h = p.add_argument_group("here (--local)")
    h.add_argument("--local", action="store_true", help="run the search on this machine with Optuna")
    h.add_argument("--trials", type=integer, metavar="N",
                   help=f"trials in all (default {space.DEFAULT_TRIALS}; grid: every combination); bayesian and hyperband: "
                        f"the first max(2, min(10, N // 3)) at random (default {space.tpe_startup_trials(space.DEFAULT_TRIALS)}), "
                        "the rest chosen by TPE from the results")
    h.add_argument("--parallel", type=integer, metavar="K",
                   help="trials at a time (default 1); TPE counts a running trial as a poor result (constant liar), "
                        "so trials side by side spread out")
    h.add_argument("--timeout", type=seconds, metavar="S", help="start no trial after S seconds (running ones finish)")
    h.add_argument("--prune-after-trials", type=integer, metavar="N",
                   help=f"trials that run to their end before the median pruner stops any (default "
                        f"{space.DEFAULT_PRUNE_AFTER_TRIALS}); it stops none before the end of epoch {space.PRUNE_WARMUP_EPOCHS}")
    h.add_argument("--keep-models", action="store_true", help="keep every trial's model, not only the best one's")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def check_mode_flags(p: argparse.ArgumentParser, args) -> None:
    wrong = [a for a in (SAGEMAKER_ONLY if args.local else LOCAL_ONLY) if getattr(args, a) != p.get_default(a)]
    if wrong:
        flag = "--" + wrong[0].replace("_", "-")
        raise UsageError(f"{flag} is for a SageMaker tuning job; drop it with --local" if args.local else
                         f"{flag} is for --local; on SageMaker use --max-jobs and --max-parallel-jobs")


def plan_from_args(args, static: dict[str, str]):
    from launch.tuning.local import local_plan

    if args.local:
        return local_plan(args.ranges, static, search=args.search, objective=args.objective, trials=args.trials,
                          parallel=1 if args.parallel is None else args.parallel, early_stopping=not args.no_early_stopping,
                          seed=args.search_seed, prune_after_trials=space.DEFAULT_PRUNE_AFTER_TRIALS
                          if args.prune_after_trials is None else args.prune_after_trials)
    return space.build_plan(args.ranges, static, search=args.search, objective=args.objective, max_jobs=args.max_jobs,
                      max_parallel=1 if args.max_parallel_jobs is None else args.max_parallel_jobs,
                      early_stopping=not args.no_early_stopping, seed=args.search_seed)


def dry_run(args) -> None:
    from launch.jobs import prices, request
    from launch.tuning import tuner

    table = prices.load(args.prices)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries exactly the request
        spec = spec_from_args(args)
        plan = plan_from_args(args, spec.hyperparameters)
        described = tuner.describe(spec, plan, table.hourly(spec.instance_type))
        created = request.tuning_job(spec, plan)
    print(json.dumps(created, indent=2))
    print(json.dumps(described), file=sys.stderr)  # the summary (price, training jobs, placeholders), after it


def main(argv: list[str]) -> None:
    p = parser()
    args = p.parse_args(argv)
    if args.dry_run and args.local:
        raise UsageError("--dry-run and --local cannot be combined")
    check_mode_flags(p, args)
    if args.dry_run:
        return dry_run(args)
    stop_signal = None
    if args.local:
        from launch.jobs.warm import warm_up
        from launch.tuning.api import static_hyperparameters
        from launch.tuning.local import search_here

        warm_up()  # the trials' server imports torch and Lightning while this process checks the space
        plan = plan_from_args(args, static_hyperparameters(args.hp, args.strategy))
        result, stop_signal = search_here(plan, Path(args.data), Path(args.out), Path(args.runs_dir),
                                          timeout_s=args.timeout, keep_models=args.keep_models)
    else:
        from launch.tuning.tuner import search_sagemaker

        spec = spec_from_args(args)
        plan = plan_from_args(args, spec.hyperparameters)
        result = search_sagemaker(spec, plan, Path(args.data), Path(args.out), Path(args.runs_dir), args.prices,
                                  follow=not args.no_wait, role_flag=args.role, region_flag=args.region)
    if not args.no_wait:
        print(tuning_result.table(result, plan), flush=True)
    print(json.dumps(result), flush=True)
    if stop_signal is not None:
        sys.exit(128 + stop_signal)
    if result["status"] not in ("Completed", "Submitted"):
        sys.exit(1)


def _main(argv: list[str]) -> None:
    launcher_errors(main, argv)


if __name__ == "__main__":
    run_command(_main)

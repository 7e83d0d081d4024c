"""Tuning as Python functions that return a `Tuning`: the search here (Optuna) or a SageMaker tuning
job, and the tuning request as `tune.py --dry-run` prints it; `import launch` gives them as
`launch.tune_local`, `launch.tune_sagemaker` and `launch.tuning_request`.

    tuned = launch.tune_local({"learning_rate": (1e-4, 1e-1, "log")}, trials=4, parallel=2, hyperparameters={"epochs": 30})
    print(tuned.table, tuned.status, tuned.best, tuned.best_model, tuned.picture)  # picture: tuning.png
    spec = launch.job_spec(spot=True, hyperparameters={"epochs": 100})
    launch.tuning_request(spec, max_jobs=20)                     # the request as a dict; no AWS call
    launch.tune_sagemaker(spec, max_jobs=20, max_parallel_jobs=3)  # on AWS

`ranges`: None (the default space), `--range` strings, or a dict of flag name to `(low, high)`,
`(low, high, "log")`, a list of categories or the `--range` text. The other options are `tune.py`'s
flags by name; a mistake raises `UsageError` with the flag's line (`--trials 0: must be at least 1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from launch.jobs.prices import PriceTable
from launch.jobs.spec import JobSpec
from launch.options import check_type, hp_pairs, hp_value
from launch.tuning import local
from launch.tuning import result as tuning_result
from launch.tuning.space import DEFAULT_PRUNE_AFTER_TRIALS, SET_BY_TUNING, Plan, build_plan, number_text
from titanic_lightning.errors import UsageError


@dataclass(frozen=True, repr=False)
class Tuning:
    """A tuning, here (`mode` "local") or on SageMaker ("sagemaker"). `record` is its summary (tuning.json,
    shape in `launch.tuning.result`), or, for a SageMaker tuning job created without waiting, what is known
    yet (status "Submitted", the uploads). `stop_signal` is the signal that stopped a local search."""

    record: dict
    plan: Plan
    stop_signal: int | None = field(default=None, compare=False)

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    @property
    def tuning_job(self) -> str:
        return self.record["tuning_job"]

    @property
    def mode(self) -> str | None:
        return self.record.get("mode")

    @property
    def trials(self) -> list[dict]:
        return list(self.record.get("trials") or [])

    @property
    def best(self) -> dict | None:
        """The completed trial with the best objective (None when none completed)."""
        return self.record.get("best")

    @property
    def best_model(self) -> Path | str | None:
        """What `entry.predict --model` takes: the best trial's model folder (a Path) or model.tar.gz S3 URI (a str)."""
        artifact = (self.best or {}).get("model_artifact")
        return Path(artifact) if artifact is not None and not artifact.startswith("s3://") else artifact

    @property
    def folder(self) -> Path | None:
        """`out`/<name>/ (absolute): tuning.json, tuning.png and, here, trials/<n>/ (logs, the best model)."""
        return Path(self.record["folder"]) if self.record.get("folder") else None

    @property
    def summary_path(self) -> Path | None:
        return self.folder / tuning_result.SUMMARY_FILE if self.folder else None

    @property
    def picture(self) -> Path | None:
        """tuning.png: the objective per trial with the best so far, and against each tuned flag."""
        return self.folder / tuning_result.PICTURE_FILE if self.folder else None

    @property
    def table(self) -> str:
        """The trials, best first, as the command prints them."""
        if "trials" not in self.record:
            return f"tuning job {self.tuning_job}: {self.status}"
        return tuning_result.table(self.record, self.plan)

    def __str__(self) -> str:
        return self.table

    __repr__ = __str__  # a notebook shows the table


def range_specs(function: str, ranges) -> list[str]:
    """`ranges` as `--range` strings (an empty list: the default space)."""
    if ranges is None:
        return []
    if isinstance(ranges, (dict, list, tuple)) and not ranges:  # not the default space by accident
        raise UsageError(f"{function}(ranges={ranges!r}): no ranges; give at least one, or None for the default space")
    if isinstance(ranges, str):
        return [ranges]
    if isinstance(ranges, (list, tuple)) and all(isinstance(r, str) for r in ranges):
        return list(ranges)
    if not isinstance(ranges, dict):
        raise UsageError(f"{function}(ranges={ranges!r}): expected a dict such as "
                         '{"learning_rate": (0.0001, 0.1, "log")} or --range strings such as ["dropout=0.0:0.5"]')
    specs = []
    for name, value in ranges.items():
        shown = f"{function}(ranges={{{name!r}: {value!r}}})"
        if not isinstance(name, str):
            raise UsageError(f"{function}(ranges=...): key {name!r} is not a flag name (a string)")
        if isinstance(value, str):
            specs.append(f"{name}={value}")
        elif isinstance(value, tuple):
            if not (len(value) == 2 or len(value) == 3 and value[2] == "log"):
                raise UsageError(f"{shown}: expected (low, high) or (low, high, \"log\")")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value[:2]):
                raise UsageError(f"{shown}: the bounds must be numbers")
            specs.append(f"{name}={number_text(value[0])}:{number_text(value[1])}{':log' if len(value) == 3 else ''}")
        elif isinstance(value, list):
            categories = [hp_value(name, v) for v in value]
            if len(categories) < 2:
                raise UsageError(f"{shown}: give two or more categories (one value is a fixed hyperparameter: "
                                 f"hyperparameters={{{name!r}: ...}})")
            if any("|" in c for c in categories):
                raise UsageError(f"{shown}: a category holds '|', which separates categories")
            specs.append(f"{name}={'|'.join(categories)}")
        else:
            raise UsageError(f"{shown}: expected (low, high), (low, high, \"log\"), a list of categories, or "
                             "the --range text such as \"0.0001:0.1:log\"")
    return specs


def static_hyperparameters(hp: list[str], strategy: str | None) -> dict[str, str]:
    """The tuning's fixed hyperparameters, checked as `--hp` values; none of the flags the tuning sets."""
    from launch.jobs.checks import parse_hyperparameters

    static = parse_hyperparameters(hp, strategy)
    for key in static:
        if key in SET_BY_TUNING:
            raise UsageError(f"--hp {key}=...: the tuning sets {key} for each trial; drop it")
    return static


def _check(fn: str, search, objective, early_stopping, search_seed, **paths) -> None:
    check_type(fn, "search", search, (str,), "a string: bayesian, random, hyperband or grid")
    check_type(fn, "objective", objective, (str,), "a string: val_loss, val_acc or val_auroc")
    check_type(fn, "early_stopping", early_stopping, (bool,), "True or False")
    check_type(fn, "search_seed", search_seed, (int,), "an integer")
    for name, value in paths.items():
        check_type(fn, name, value, (str, Path), "a folder (str or Path)")


def tune_local(ranges=None, *, trials: int | None = None, parallel: int = 1, hyperparameters: dict | list | None = None,
               strategy: str | None = None, search: str = "bayesian", objective: str = "val_loss",
               early_stopping: bool = True, search_seed: int = 1, prune_after_trials: int = DEFAULT_PRUNE_AFTER_TRIALS,
               timeout_s: float | None = None, keep_models: bool = False, data: str | Path = "data",
               out: str | Path = "tuning", runs_dir: str | Path = "runs") -> Tuning:
    """The search here, as `tune.py --local` runs it (`launch.tuning.trials`), writing `out/<name>/` and a record
    per trial in `runs_dir`. A script calling this runs its code under `if __name__ == "__main__":` (the trials
    are forked from a multiprocessing server). Ctrl-C or SIGTERM stops the search: status "Stopped"."""
    fn = "tune_local"
    check_type(fn, "trials", trials, (int,), "an integer", optional=True)
    check_type(fn, "parallel", parallel, (int,), "an integer")
    check_type(fn, "prune_after_trials", prune_after_trials, (int,), "an integer")
    check_type(fn, "keep_models", keep_models, (bool,), "True or False")
    check_type(fn, "strategy", strategy, (str,), "a string", optional=True)
    _check(fn, search, objective, early_stopping, search_seed, data=data, out=out, runs_dir=runs_dir)
    if timeout_s is not None:
        check_type(fn, "timeout_s", timeout_s, (int, float), "a number of seconds")
        if not math.isfinite(timeout_s) or timeout_s <= 0:
            raise UsageError(f"--timeout {timeout_s!r}: must be a finite number of seconds above 0")
    specs = range_specs(fn, ranges)
    static = static_hyperparameters(hp_pairs(fn, hyperparameters), strategy)
    plan = local.local_plan(specs, static, search=search, objective=objective, trials=trials, parallel=parallel,
                            early_stopping=early_stopping, seed=search_seed, prune_after_trials=prune_after_trials)
    # `out` made absolute: the summary's folder then still names it after the caller changes folder.
    result, stop_signal = local.search_here(plan, Path(data), Path(out).absolute(), Path(runs_dir), timeout_s=timeout_s,
                                            keep_models=keep_models)
    return Tuning(record=result, plan=plan, stop_signal=stop_signal)


def _sagemaker_plan(fn: str, spec, ranges, max_jobs, max_parallel_jobs, search, objective, early_stopping,
                    search_seed, **paths) -> Plan:
    if not isinstance(spec, JobSpec):
        raise UsageError(f"{fn}: expected a JobSpec from launch.job_spec(...), got {type(spec).__name__}")
    check_type(fn, "max_jobs", max_jobs, (int,), "an integer", optional=True)
    check_type(fn, "max_parallel_jobs", max_parallel_jobs, (int,), "an integer")
    _check(fn, search, objective, early_stopping, search_seed, **paths)
    return build_plan(range_specs(fn, ranges), spec.hyperparameters, search=search, objective=objective,
                      max_jobs=max_jobs, max_parallel=max_parallel_jobs, early_stopping=early_stopping, seed=search_seed)


def tuning_request(spec: JobSpec, ranges=None, *, max_jobs: int | None = None, max_parallel_jobs: int = 1,
                   search: str = "bayesian", objective: str = "val_loss", early_stopping: bool = True,
                   search_seed: int = 1, prices: PriceTable | str | Path | None = None) -> dict:
    """What `tune.py --dry-run` prints: the tuning request around the job `spec` describes (its
    hyperparameters are the trials' fixed ones), with the job's on-demand USD per hour. No AWS call."""
    from launch.jobs import prices as price_tables
    from launch.tuning import tuner

    plan = _sagemaker_plan("tuning_request", spec, ranges, max_jobs, max_parallel_jobs, search, objective,
                           early_stopping, search_seed)
    return tuner.describe(spec, plan, price_tables.table(prices).hourly(spec.instance_type))


def tune_sagemaker(spec: JobSpec, ranges=None, *, max_jobs: int | None = None, max_parallel_jobs: int = 1,
                   search: str = "bayesian", objective: str = "val_loss", early_stopping: bool = True,
                   search_seed: int = 1, wait: bool = True, data: str | Path = "data", out: str | Path = "tuning",
                   runs_dir: str | Path = "runs", prices: PriceTable | str | Path | None = None) -> Tuning:
    """A SageMaker tuning job around the training job `spec` describes (role and bucket: the spec's, else
    $SAGEMAKER_ROLE / the session's default bucket). With `wait`, followed to its end, each training job recorded
    in `runs_dir` and `out/<name>/` written; without, returned at once with status "Submitted"."""
    from launch.tuning.tuner import search_sagemaker

    fn = "tune_sagemaker"
    check_type(fn, "wait", wait, (bool,), "True or False")
    plan = _sagemaker_plan(fn, spec, ranges, max_jobs, max_parallel_jobs, search, objective, early_stopping,
                           search_seed, data=data, out=out, runs_dir=runs_dir)
    result = search_sagemaker(spec, plan, Path(data), Path(out).absolute(), Path(runs_dir), prices, follow=wait,
                              role_flag=spec.role, region_flag=spec.region)
    return Tuning(record=result, plan=plan)

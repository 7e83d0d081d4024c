"""The search space of a tuning (the `--range` flags of `launch/tune.py`, or `DEFAULT_SPACE` less the
flags fixed with `--hp`) and the `Plan` of the whole tuning, checked before anything starts.

Every value is checked with the entry's own parser, in the form the job's container hands it over
(`checks.check_hyperparameter`): a numeric range's bounds (each flag's type is an interval, so every
value in between passes too) and every category; and SageMaker's limits on ranges.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

from launch.jobs import checks
from titanic_lightning.errors import UsageError

# The default space: the optimiser's step size and regularisation, and the network's shape.
DEFAULT_SPACE = ("learning_rate=0.0001:0.1:log", "batch_size=16:128", "dropout=0.0:0.5", "weight_decay=0.000001:0.01:log",
                 "hidden_sizes=[32]|[64, 32]|[128, 64]|[64, 64, 32]")
# SageMaker's limits (ParameterValues, ParameterValue, ParameterRanges in the service model).
MAX_CATEGORIES, MAX_VALUE_CHARS, MAX_RANGES = 30, 256, 30
# Flags whose values the tuning itself sets (where each trial reads its data and writes its model).
SET_BY_TUNING = ("train", "val", "test", "csv", "preprocessing", "model_dir", "output_dir", "checkpoint_dir", "debug")

CONTINUOUS, INTEGER, CATEGORICAL = "Continuous", "Integer", "Categorical"  # SageMaker's kinds of range
# The searches, with SageMaker's names for them (HyperParameterTuningJobStrategyType).
STRATEGY_NAMES = {"bayesian": "Bayesian", "random": "Random", "hyperband": "Hyperband", "grid": "Grid"}
OBJECTIVES = {"val_loss": "Minimize", "val_acc": "Maximize", "val_auroc": "Maximize"}
DEFAULT_MAX_JOBS = 10  # training jobs without --max-jobs (a grid: every combination)
DEFAULT_TRIALS = 10  # a local search's trials without --trials (a grid: every combination)
DEFAULT_PRUNE_AFTER_TRIALS = 5  # trials that run to their end before the median pruner stops any
# The median pruner looks at a trial from this epoch on: the first epochs' losses depend more on the
# learning rate's start than on where the trial ends.
PRUNE_WARMUP_EPOCHS = 5
# Hyperband counts a trial's resource in epochs; SageMaker's MaxResource is at most this.
HYPERBAND_MAX_EPOCHS = 20000


@dataclass(frozen=True)
class Range:
    """One tuned flag: `kind` Continuous or Integer with `low`/`high` (and `log`), or Categorical with `values`."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    values: tuple[str, ...] = ()
    source: str = ""  # the --range flag as given, for messages

    def as_api(self) -> dict:
        """The range as CreateHyperParameterTuningJob takes it."""
        if self.kind == CATEGORICAL:
            return {"Name": self.name, "Values": list(self.values)}
        return {"Name": self.name, "MinValue": number_text(self.low), "MaxValue": number_text(self.high),
                "ScalingType": "Logarithmic" if self.log else "Linear"}


def number_text(value) -> str:
    """A bound or a suggested value as a hyperparameter string: `3`, `0.001`, `1e-06`; a string as it is."""
    if isinstance(value, str):
        return value
    return str(int(value)) if isinstance(value, int) and not isinstance(value, bool) else repr(float(value))


def flag_kind(name: str) -> str | None:
    """Integer or Continuous for a numeric flag of the entry, else None (categories only)."""
    from titanic_lightning.config import TrainConfig

    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] if typing.get_origin(hint) is typing.Union else [hint]
    if len(kinds) != 1 or not isinstance(kinds[0], type) or issubclass(kinds[0], bool):
        return None
    return INTEGER if issubclass(kinds[0], int) else CONTINUOUS if issubclass(kinds[0], float) else None


def parse_range(spec: str) -> Range:
    """One `--range` value → a checked `Range`; a UsageError naming `--range SPEC` otherwise."""
    source = f"--range {spec}"
    name, sep, rest = spec.partition("=")
    name = name.strip().removeprefix("--")
    if not sep or not name:
        raise UsageError(f"{source}: expected NAME=LOW:HIGH, NAME=LOW:HIGH:log or NAME=A|B|C, "
                         "e.g. --range learning_rate=0.0001:0.1:log")
    if name in SET_BY_TUNING:
        raise UsageError(f"{source}: {name!r} is set by the tuning itself, not tuned")
    if name not in checks.entry_flags():
        tunable = sorted(checks.entry_flags() - set(SET_BY_TUNING))
        raise UsageError(f"{source}: {name!r} is not a flag of entry/train.py; choose from {', '.join(tunable)}")
    return _categorical(name, rest, source) if "|" in rest else _numeric(name, rest, source)


def _categorical(name: str, rest: str, source: str) -> Range:
    values = [v.strip() for v in rest.split("|")]
    if "" in values:
        raise UsageError(f"{source}: an empty category; separate values with | as in {name}=A|B")
    if len(set(values)) != len(values):
        raise UsageError(f"{source}: a category is given twice")
    if len(values) > MAX_CATEGORIES:
        raise UsageError(f"{source}: {len(values)} categories; SageMaker takes at most {MAX_CATEGORIES}")
    for value in values:
        if len(value) > MAX_VALUE_CHARS:
            raise UsageError(f"{source}: a category longer than SageMaker's {MAX_VALUE_CHARS} characters")
        checks.check_hyperparameter(name, value, f"{source} (category {value})")
    return Range(name=name, kind=CATEGORICAL, values=tuple(values), source=source)


def _numeric(name: str, rest: str, source: str) -> Range:
    parts = [p.strip() for p in rest.split(":")]
    log = parts[2:] == ["log"]
    if len(parts) != 2 and not log:
        raise UsageError(f"{source}: expected LOW:HIGH or LOW:HIGH:log, or categories A|B|C")
    kind = flag_kind(name)
    if kind is None:
        raise UsageError(f"{source}: {name} is not a numeric flag; give its values as categories, e.g. {name}=A|B")
    bounds = []
    for text in parts[:2]:
        try:
            value = int(text) if kind == INTEGER else float(text)
        except ValueError:
            what = f"an integer ({name} is an integer" if kind == INTEGER else f"a number ({name} is a real"
            raise UsageError(f"{source}: {text!r} is not {what} flag)") from None
        if not math.isfinite(value):
            raise UsageError(f"{source}: {text!r} is not a finite number")
        bounds.append(value)
    low, high = bounds
    if not low < high:
        raise UsageError(f"{source}: LOW must be below HIGH")
    if log and low <= 0:
        raise UsageError(f"{source}: a logarithmic range needs LOW above 0")
    for bound in map(number_text, bounds):  # the entry's parser, on each bound as a trial would receive it
        checks.check_hyperparameter(name, bound, f"{source} (bound {bound})")
    return Range(name=name, kind=kind, low=low, high=high, log=log, source=source)


def parse_space(specs: list[str], static: dict[str, str]) -> list[Range]:
    """The `--range` flags (or the default space, less the flags fixed by `--hp`), checked."""
    if not specs:
        return [r for r in map(parse_range, DEFAULT_SPACE) if r.name not in static]
    ranges = [parse_range(s) for s in specs]
    for i, r in enumerate(ranges):
        if any(r.name == earlier.name for earlier in ranges[:i]):
            raise UsageError(f"{r.source}: {r.name} is given more than one range")
        if r.name in static:
            raise UsageError(f"{r.source}: {r.name} also has a fixed value (--hp {r.name}={static[r.name]}); drop one")
    if len(ranges) > MAX_RANGES:
        raise UsageError(f"--range: {len(ranges)} ranges; SageMaker tunes at most {MAX_RANGES}")
    return ranges


def grid_size(ranges: list[Range]) -> int:
    return math.prod(len(r.values) for r in ranges)


def tpe_startup_trials(trials: int) -> int:
    """Trials a local Bayesian search samples at random before TPE models the results: a third, at least 2
    and at most Optuna's default of 10 (`--trials 10`: 3 random, then 7 TPE; Optuna's default: all 10 random)."""
    return max(2, min(10, trials // 3))


@dataclass(frozen=True)
class Plan:
    """What a tuning searches, here or on SageMaker: the ranges, the search, the objective and limits."""

    ranges: list[Range]
    search: str = "bayesian"
    objective: str = "val_loss"
    max_jobs: int | None = DEFAULT_MAX_JOBS  # None with grid: every combination once
    max_parallel: int = 1
    early_stopping: bool = True
    seed: int = 1
    static: dict[str, str] = dataclasses.field(default_factory=dict)  # the fixed --hp values (and --strategy)
    prune_after_trials: int = DEFAULT_PRUNE_AFTER_TRIALS  # local only

    @property
    def objective_type(self) -> str:
        return OBJECTIVES[self.objective]

    @property
    def epochs(self) -> int:
        """The epochs each trial may run: the fixed `--hp epochs`, else the entry's default."""
        from titanic_lightning.config import TrainConfig

        return int(checks.container_forms(self.static["epochs"])[0]) if "epochs" in self.static else TrainConfig.epochs

    @property
    def early_stopping_type(self) -> str:
        """SageMaker's TrainingJobEarlyStoppingType: Hyperband stops trials itself and must have Off."""
        return "Auto" if self.early_stopping and self.search != "hyperband" else "Off"


def build_plan(range_specs: list[str], static: dict[str, str], *, search: str = "bayesian", objective: str = "val_loss",
               max_jobs: int | None = None, max_parallel: int = 1, early_stopping: bool = True, seed: int = 1,
               prune_after_trials: int = DEFAULT_PRUNE_AFTER_TRIALS, jobs_flag: str = "--max-jobs",
               parallel_flag: str = "--max-parallel-jobs") -> Plan:
    """Check the tuning's options together (offline) and return the plan."""
    if search not in STRATEGY_NAMES:
        raise UsageError(f"--search {search}: choose from {', '.join(STRATEGY_NAMES)}")
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective {objective}: choose from {', '.join(OBJECTIVES)}")
    ranges = parse_space(range_specs, static)
    if not ranges:
        raise UsageError("nothing to tune: every flag of the default space has a fixed --hp value; add --range NAME=...")
    if max_parallel < 1:
        raise UsageError(f"{parallel_flag} {max_parallel}: must be at least 1")
    if seed < 1:  # the SDK sends no RandomSeed of 0
        raise UsageError(f"--search-seed {seed}: must be 1 or more")
    if prune_after_trials < 0:
        raise UsageError(f"--prune-after-trials {prune_after_trials}: must be 0 or more")
    if search == "grid":
        numeric = [r for r in ranges if r.kind != CATEGORICAL]
        if numeric:
            where = "" if range_specs else " (the default space has numeric ranges)"
            raise UsageError(f"--search grid: {numeric[0].source} is not categorical{where}; a grid takes categories "
                             f"only (--range \"{numeric[0].name}=A|B|C\")")
        if max_jobs is not None:
            raise UsageError(f"{jobs_flag} {max_jobs} with --search grid: a grid runs each of its {grid_size(ranges)} "
                             "combinations once; drop it")
    else:
        max_jobs = DEFAULT_MAX_JOBS if max_jobs is None else max_jobs
        if max_jobs < 1:
            raise UsageError(f"{jobs_flag} {max_jobs}: must be at least 1")
    plan = Plan(ranges=ranges, search=search, objective=objective, max_jobs=max_jobs, max_parallel=max_parallel,
                early_stopping=early_stopping, seed=seed, static=dict(static), prune_after_trials=prune_after_trials)
    if search == "hyperband":
        if any(r.name == "epochs" for r in ranges):
            raise UsageError("--range epochs with --search hyperband: Hyperband decides how many epochs each trial "
                             "runs (up to --hp epochs); drop the range")
        if plan.epochs > HYPERBAND_MAX_EPOCHS:
            raise UsageError(f"--hp epochs={plan.epochs} with --search hyperband: SageMaker's Hyperband runs at most "
                             f"{HYPERBAND_MAX_EPOCHS} epochs")
    return plan

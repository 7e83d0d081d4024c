"""The search run on this machine (`tune.py --local`): Optuna chooses, the entry trains.

Each trial is a real run of `python -m entry.train`, one process per trial, forked from a warm
interpreter that has imported torch and Lightning once (`launch.jobs.warm`), with the trial's
hyperparameters in the form SageMaker's container would hand them over (`launch.jobs.checks.container_forms`),
the tuning's fixed `--hp` values, and its own `--model_dir` and `--output_dir`:

    <tuning folder>/trials/<n>/model/      the trial's model (kept for the best trial only)
    <tuning folder>/trials/<n>/output/     its logs and curves.png
    <tuning folder>/trials/<n>/train.log   everything it printed

Why a process and not the training function in this process: pruning needs the epoch lines
while the trial runs, and those are exactly what SageMaker's tuner reads from a job's log (the
same `METRIC_DEFINITIONS` regexes parse them here); a process can be stopped at any moment with
SIGTERM, which the entry answers by exiting cleanly with 143, leaving no half-written file; trials
share no Lightning, torch or signal state; and trials in parallel run truly in parallel (one
thread per running trial only reads its output), each with its share of the CPU threads.

Optuna's ask-and-tell interface drives it: a TPE sampler (seeded) for `bayesian`, a seeded random
sampler for `random`, every combination queued in the order given for `grid`, and for pruning a median pruner (a trial whose
objective at an epoch is worse than the median of earlier trials at that epoch is stopped) or,
for `hyperband`, Optuna's Hyperband pruner. A trial's objective is the last value of its metric
that it printed: the `final:` line's, on the best weights, as SageMaker records it.

Sized for small budgets: TPE samples at random only for its first `tpe_startup_trials(trials)`
trials (Optuna's default of 10 would make `--trials 10` a random search), treats running trials
as poor results when trials run side by side (the constant liar, which Optuna 4 leaves off), and
the median pruner stops no trial before the end of epoch `PRUNE_WARMUP_EPOCHS`.

Ctrl-C or SIGTERM stops the running trials (SIGTERM, then SIGKILL after a grace period) and starts
no more; what finished is summarised as usual, with status Stopped.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from launch.console import log
from launch.jobs.checks import container_forms
from launch.jobs.processes import signal_group, stop_running
from launch.jobs.spec import METRIC_DEFINITIONS
from launch.jobs.warm import WarmProcess, warm_up
from launch.tuning.space import CATEGORICAL, INTEGER, PRUNE_WARMUP_EPOCHS, Plan, Range, number_text, tpe_startup_trials
from titanic_lightning.contracts import MODEL_FILE, npz_name

POLL_S = 0.1
TRIAL_MODULE = "entry.train"
_PATTERNS = [(m["Name"], re.compile(m["Regex"])) for m in METRIC_DEFINITIONS]

COMPLETED, PRUNED, FAILED, STOPPED = "Completed", "Pruned", "Failed", "Stopped"


def metrics_of(line: str) -> dict[str, float]:
    """The metrics SageMaker would read from one log line (its `MetricDefinitions`)."""
    found = {}
    for name, pattern in _PATTERNS:
        match = pattern.search(line)
        if match:
            found[name] = float(match.group(1))
    return found


@dataclass
class Trial:
    number: int
    hyperparameters: dict[str, str]
    folder: Path
    status: str = "InProgress"
    metrics: dict[str, float] = field(default_factory=dict)  # the last value of each metric printed
    epochs: int = 0
    exit_code: int | None = None
    wall_seconds: float | None = None
    process: WarmProcess | None = None
    stop_reason: str | None = None  # "pruned" or "stopped", set before the process is signalled
    error: str | None = None  # the entry's last `error: ...` line

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def output_dir(self) -> Path:
        return self.folder / "output"

    @property
    def log_file(self) -> Path:
        return self.folder / "train.log"

    @property
    def model_artifact(self) -> str | None:
        """The trial's model folder (what `entry.predict --model` takes) while it holds a model."""
        return str(self.model_dir.resolve()) if (self.model_dir / MODEL_FILE).is_file() else None


def trial_args(trial: Trial, data_dir: Path, static: dict[str, str]) -> list[str]:
    """The flags of the trial's `python -m entry.train`."""
    data = [f"--{split}" for split in ("train", "val", "test")]
    args = []
    for flag, split in zip(data, ("train", "val", "test")):
        path = data_dir / npz_name(split)
        if path.is_file():
            args += [flag, str(path.resolve())]
    for key, value in {**static, **trial.hyperparameters}.items():
        args += [f"--{key}", container_forms(value)[0]]
    return ["--model_dir", str(trial.model_dir.resolve()), "--output_dir", str(trial.output_dir.resolve()), *args]


def trial_env(parallel: int) -> dict[str, str]:
    from launch.jobs.code import PACKAGES, package_dir
    from titanic_lightning.environment import CHECKPOINT_DIR_VARIABLE, without_launcher

    env = without_launcher()
    env.pop(CHECKPOINT_DIR_VARIABLE, None)  # every trial trains afresh: no checkpoint folder
    # The trial imports the same entry and library as this process, from a checkout or site-packages.
    roots = dict.fromkeys(str(package_dir(p).parent) for p in PACKAGES)
    env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    # Trials side by side share the cores instead of each taking them all.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    return env


def run_trial(trial: Trial, optuna_trial, plan: Plan, data_dir: Path, env: dict[str, str], stop) -> None:
    """Run one trial to its end, reporting each epoch's objective to Optuna and stopping it when pruned
    (or when `stop`, the search's StopRequest, has a signal)."""
    if stop.signal is not None:
        trial.status = STOPPED
        return
    trial.folder.mkdir(parents=True)
    args = trial_args(trial, data_dir, plan.static)
    started = time.perf_counter()
    with trial.log_file.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join([sys.executable, "-m", TRIAL_MODULE, *args]) + "\n")
        out.flush()
        # In its own session: Ctrl-C at the terminal reaches the tuner only; it stops trials itself.
        trial.process = WarmProcess(TRIAL_MODULE, args, cwd=trial.folder, env=env)
        for line in trial.process.stdout:
            out.write(line)
            out.flush()
            if stop.signal is not None and trial.stop_reason is None:  # started while the search was stopping
                trial.stop_reason = "stopped"
                signal_group(trial.process, signal.SIGTERM)
            if line.startswith("error: "):
                trial.error = line.strip()
            found = metrics_of(line)
            trial.metrics.update(found)
            if "epoch" in found and plan.objective in found and trial.stop_reason is None:
                trial.epochs = int(found["epoch"])
                optuna_trial.report(found[plan.objective], trial.epochs)
                if optuna_trial.should_prune():
                    trial.stop_reason = "pruned"
                    out.write(f"[tune] pruned after epoch {trial.epochs}: {plan.objective}={found[plan.objective]:.4f} "
                              "falls behind the earlier trials\n")
                    signal_group(trial.process, signal.SIGTERM)
        trial.exit_code = trial.process.wait()
    trial.wall_seconds = round(time.perf_counter() - started, 1)
    if trial.stop_reason == "pruned":
        trial.status = PRUNED
    elif trial.stop_reason is not None:
        trial.status = STOPPED
    elif trial.exit_code == 0 and plan.objective in trial.metrics:
        trial.status = COMPLETED
    else:
        trial.status = FAILED


def distributions(ranges: list[Range]) -> dict:
    import optuna

    out = {}
    for r in ranges:
        if r.kind == CATEGORICAL:
            out[r.name] = optuna.distributions.CategoricalDistribution(list(r.values))
        elif r.kind == INTEGER:
            out[r.name] = optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log)
        else:
            out[r.name] = optuna.distributions.FloatDistribution(float(r.low), float(r.high), log=r.log)
    return out


def study_for(plan: Plan):
    """The Optuna study the search runs: its sampler and pruner, in memory."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner prints its own line per trial
    if plan.search == "random":
        sampler = optuna.samplers.RandomSampler(seed=plan.seed)
    else:
        # Trials side by side: each running one counts as a poor result (the constant liar), so the
        # next proposal looks elsewhere instead of next to it (Optuna 4 leaves this off by default).
        sampler = optuna.samplers.TPESampler(seed=plan.seed, n_startup_trials=tpe_startup_trials(plan.max_jobs or 0),
                                             constant_liar=plan.max_parallel > 1)
    if not plan.early_stopping:
        pruner = optuna.pruners.NopPruner()
    elif plan.search == "hyperband":
        # As SageMaker's (MinResource 1): Hyperband's first rung is one epoch by design.
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.epochs)
    else:
        # Steps are epochs (1, 2, ...): no trial is pruned before the end of epoch PRUNE_WARMUP_EPOCHS.
        pruner = optuna.pruners.MedianPruner(n_startup_trials=plan.prune_after_trials, n_warmup_steps=PRUNE_WARMUP_EPOCHS)
    direction = "minimize" if plan.objective_type == "Minimize" else "maximize"
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)
    if plan.search == "grid":
        # Every combination once, in the order the ranges list them (Optuna's GridSampler stops the
        # study from inside `tell`, which only works under `optimize`): queued trials take their
        # parameters as given.
        for combination in itertools.product(*(r.values for r in plan.ranges)):
            study.enqueue_trial(dict(zip((r.name for r in plan.ranges), combination)))
    return study


def value_text(value) -> str:
    """An Optuna suggestion as a hyperparameter string."""
    return value if isinstance(value, str) else number_text(value)


def search(plan: Plan, data_dir: Path, folder: Path, trials: int, parallel: int, timeout_s: float | None,
           stop, on_trial_end=None) -> list[Trial]:
    """Run up to `trials` trials, `parallel` at a time, starting none after `timeout_s`; return them all.

    `stop` is the caller's `launch.jobs.processes.StopRequest`: a signal stops the running trials and the search.
    `on_trial_end(trial)` runs in this thread as each trial ends (its run record).
    """
    import optuna

    warm_up()  # the trials' imports load while the study is built (unless `tune.py` started them already)
    study = study_for(plan)
    space = distributions(plan.ranges)
    env = trial_env(parallel)
    started = time.monotonic()
    done: list[Trial] = []
    running: dict[threading.Thread, tuple[Trial, object]] = {}
    finished_lock = threading.Lock()
    finished: list[threading.Thread] = []

    def work(trial: Trial, optuna_trial) -> None:
        try:
            run_trial(trial, optuna_trial, plan, data_dir, env, stop)
        except Exception as exc:  # noqa: BLE001 - a trial that could not run is a failed trial, not a crashed search
            trial.status = FAILED
            if trial.process is not None and trial.process.poll() is None:
                signal_group(trial.process, signal.SIGKILL)
            log(f"trial {trial.number}: could not run: {type(exc).__name__}: {exc}")
        finally:
            with finished_lock:
                finished.append(threading.current_thread())

    def settle() -> None:
        with finished_lock:
            ended, finished[:] = list(finished), []
        for thread in ended:
            thread.join()
            trial, optuna_trial = running.pop(thread)
            if trial.status == COMPLETED:
                study.tell(optuna_trial, trial.metrics[plan.objective])
            elif trial.status == PRUNED:
                study.tell(optuna_trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(optuna_trial, state=optuna.trial.TrialState.FAIL)
            done.append(trial)
            shown = ", ".join(f"{k}={v}" for k, v in trial.hyperparameters.items())
            value = trial.metrics.get(plan.objective)
            log(f"trial {trial.number}: {trial.status}" + (f" {plan.objective}={value:.4f}" if value is not None else "")
                + f" after {trial.epochs} epoch(s), {trial.wall_seconds} s ({shown})")
            if on_trial_end is not None:
                on_trial_end(trial)

    number = 0
    while True:
        settle()
        if stop.signal is not None:
            stop_running([t for t, _ in running.values()], lambda t: setattr(t, "stop_reason", t.stop_reason or "stopped"))
            while running:
                settle()
                time.sleep(POLL_S)
            break
        out_of_time = timeout_s is not None and time.monotonic() - started >= timeout_s
        more = number < trials and not out_of_time
        if not more and not running:
            break
        if more and len(running) < parallel:
            optuna_trial = study.ask(space)
            params = {name: value_text(optuna_trial.params[name]) for name in space}
            trial = Trial(number=number, hyperparameters=params, folder=folder / "trials" / str(number))
            thread = threading.Thread(target=work, args=(trial, optuna_trial), name=f"trial-{number}", daemon=True)
            running[thread] = (trial, optuna_trial)
            log(f"trial {number}: started ({', '.join(f'{k}={v}' for k, v in params.items())})")
            thread.start()
            number += 1
            continue
        time.sleep(POLL_S)
    return sorted(done, key=lambda t: t.number)

"""The search run on this machine (`tune.py --local`): Optuna chooses, the entry trains.

Each trial is a `python -m entry.train` process forked from a warm interpreter (`launch.jobs.warm`),
given its hyperparameters as SageMaker's container would, in its own folder `<tuning folder>/trials/<n>/`
(`model/`, kept for the best trial only; `output/`; `train.log`, all it printed). A process, not a call:
pruning reads its epoch lines as SageMaker's tuner reads a job's log (`METRIC_DEFINITIONS`), SIGTERM
stops it cleanly at any moment, and trials share no state and truly run in parallel. Its objective
is the last value of the metric it printed (the `final:` line's). Ctrl-C or SIGTERM stops the running
trials (SIGTERM, then SIGKILL after a grace period) and the search; what finished is still summarised.
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
    stop_reason: str | None = None  # PRUNED or STOPPED, set before the process is signalled
    error: str | None = None  # the entry's last `error: ...` line

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def log_file(self) -> Path:
        return self.folder / "train.log"

    @property
    def model_artifact(self) -> str | None:
        """The trial's model folder (what `entry.predict --model` takes) while it holds a model."""
        return str(self.model_dir.resolve()) if (self.model_dir / MODEL_FILE).is_file() else None


def trial_args(trial: Trial, data_dir: Path, static: dict[str, str]) -> list[str]:
    args = ["--model_dir", str(trial.model_dir.resolve()), "--output_dir", str((trial.folder / "output").resolve())]
    for split in ("train", "val", "test"):
        if (data_dir / npz_name(split)).is_file():
            args += [f"--{split}", str((data_dir / npz_name(split)).resolve())]
    for key, value in {**static, **trial.hyperparameters}.items():
        args += [f"--{key}", container_forms(value)[0]]
    return args


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
    with trial.log_file.open("w", encoding="utf-8", buffering=1) as out:  # line-buffered: readable as it runs
        out.write("$ " + " ".join([sys.executable, "-m", TRIAL_MODULE, *args]) + "\n")
        # In its own session: Ctrl-C at the terminal reaches the tuner only; it stops trials itself.
        trial.process = WarmProcess(TRIAL_MODULE, args, cwd=trial.folder, env=env)
        for line in trial.process.stdout:
            out.write(line)
            if stop.signal is not None and trial.stop_reason is None:  # started while the search was stopping
                trial.stop_reason = STOPPED
                signal_group(trial.process, signal.SIGTERM)
            if line.startswith("error: "):
                trial.error = line.strip()
            found = {name: float(m.group(1)) for name, pattern in _PATTERNS if (m := pattern.search(line))}
            trial.metrics.update(found)
            if "epoch" in found and plan.objective in found and trial.stop_reason is None:
                trial.epochs = int(found["epoch"])
                optuna_trial.report(found[plan.objective], trial.epochs)
                if optuna_trial.should_prune():
                    out.write(f"[tune] pruned after epoch {trial.epochs}: {plan.objective}={found[plan.objective]:.4f} "
                              "falls behind the earlier trials\n")
                    trial.stop_reason = PRUNED
                    signal_group(trial.process, signal.SIGTERM)
        trial.exit_code = trial.process.wait()
    trial.wall_seconds = round(time.perf_counter() - started, 1)
    completed = trial.exit_code == 0 and plan.objective in trial.metrics
    trial.status = trial.stop_reason or (COMPLETED if completed else FAILED)


def distributions(ranges: list[Range]) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    return {r.name: CategoricalDistribution(list(r.values)) if r.kind == CATEGORICAL else
            IntDistribution(int(r.low), int(r.high), log=r.log) if r.kind == INTEGER else
            FloatDistribution(float(r.low), float(r.high), log=r.log) for r in ranges}


def study_for(plan: Plan):
    """The Optuna study the search runs, in memory: a seeded TPE sampler (`bayesian`, `hyperband`) or random
    sampler; a median pruner, or Hyperband's; a grid as every combination queued in the order given."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tuner prints its own line per trial
    if plan.search == "random":
        sampler = optuna.samplers.RandomSampler(seed=plan.seed)
    else:
        # Random only for the first `tpe_startup_trials` (Optuna's 10 would make `--trials 10` a random
        # search). Trials side by side: each running one counts as a poor result (the constant liar,
        # which Optuna 4 leaves off), so the next proposal looks elsewhere.
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
    study = optuna.create_study(direction=plan.objective_type.lower(), sampler=sampler, pruner=pruner)
    if plan.search == "grid":
        # Not Optuna's GridSampler: it stops the study from inside `tell`, which only works under `optimize`.
        for combination in itertools.product(*(r.values for r in plan.ranges)):
            study.enqueue_trial(dict(zip((r.name for r in plan.ranges), combination)))
    return study


def search(plan: Plan, data_dir: Path, folder: Path, trials: int, parallel: int, timeout_s: float | None,
           stop, on_trial_end) -> list[Trial]:
    """Run up to `trials` trials, `parallel` at a time, starting none after `timeout_s`, until `stop` (the caller's
    `launch.jobs.processes.StopRequest`) has a signal; `on_trial_end(trial)` runs in this thread as each ends."""
    from optuna.trial import TrialState

    warm_up()  # the trials' imports load while the study is built (unless `tune.py` started them already)
    study = study_for(plan)
    space = distributions(plan.ranges)
    env = trial_env(parallel)
    started = time.monotonic()
    done: list[Trial] = []
    running: dict[threading.Thread, tuple[Trial, object]] = {}

    def work(trial: Trial, optuna_trial) -> None:
        try:
            run_trial(trial, optuna_trial, plan, data_dir, env, stop)
        except Exception as exc:  # noqa: BLE001 - a trial that could not run is a failed trial, not a crashed search
            trial.status = FAILED
            if trial.process is not None and trial.process.poll() is None:
                signal_group(trial.process, signal.SIGKILL)
            log(f"trial {trial.number}: could not run: {type(exc).__name__}: {exc}")

    def settle() -> None:
        for thread in [t for t in running if not t.is_alive()]:
            trial, optuna_trial = running.pop(thread)
            if trial.status == COMPLETED:
                study.tell(optuna_trial, trial.metrics[plan.objective])
            else:
                study.tell(optuna_trial, state=TrialState.PRUNED if trial.status == PRUNED else TrialState.FAIL)
            done.append(trial)
            shown = ", ".join(f"{k}={v}" for k, v in trial.hyperparameters.items())
            value = trial.metrics.get(plan.objective)
            log(f"trial {trial.number}: {trial.status}" + (f" {plan.objective}={value:.4f}" if value is not None else "")
                + f" after {trial.epochs} epoch(s), {trial.wall_seconds} s ({shown})")
            on_trial_end(trial)

    number = 0
    while stop.signal is None:
        settle()
        more = number < trials and (timeout_s is None or time.monotonic() - started < timeout_s)
        if not more and not running:
            break
        if more and len(running) < parallel:
            optuna_trial = study.ask(space)
            params = {name: number_text(optuna_trial.params[name]) for name in space}
            trial = Trial(number=number, hyperparameters=params, folder=folder / "trials" / str(number))
            thread = threading.Thread(target=work, args=(trial, optuna_trial), name=f"trial-{number}", daemon=True)
            running[thread] = (trial, optuna_trial)
            log(f"trial {number}: started ({', '.join(f'{k}={v}' for k, v in params.items())})")
            thread.start()
            number += 1
        else:
            time.sleep(POLL_S)
    if stop.signal is not None:
        stop_running([t for t, _ in running.values()], lambda t: setattr(t, "stop_reason", t.stop_reason or STOPPED))
    while running:
        settle()
        time.sleep(POLL_S)
    return sorted(done, key=lambda t: t.number)

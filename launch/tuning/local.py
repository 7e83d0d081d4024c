"""The search run here (`tune.py --local`, `launch.tune_local`): its plan, its folder, the trials
run by `launch.tuning.trials`, each trial's run record in `--runs-dir`, and only the best trial's
model kept; the summary and tuning.png written by `launch.tuning.result`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from launch.console import log
from launch.jobs import s3data
from launch.jobs.folder import new_folder
from launch.jobs.processes import StopRequest
from launch.records import report
from launch.tuning import result as tuning_result
from launch.tuning import trials
from launch.tuning.space import DEFAULT_TRIALS, Plan, build_plan, grid_size
from launch.tuning.trials import COMPLETED, PRUNED, Trial
from titanic_lightning.errors import UsageError
from titanic_lightning.io.clean import record_made, remove_owned
from titanic_lightning.io.outputs import check_folder

LOCAL = "local"  # a trial's instance type: a plain process on this machine, not an emulated instance


def local_plan(specs: list[str], static: dict[str, str], *, search: str, objective: str, trials: int | None,
               parallel: int, early_stopping: bool, seed: int, prune_after_trials: int) -> Plan:
    """The plan of a local search, its limits named by `--trials` and `--parallel`."""
    return build_plan(specs, static, search=search, objective=objective,
                      max_jobs=trials if trials is not None or search == "grid" else DEFAULT_TRIALS,
                      max_parallel=parallel, early_stopping=early_stopping, seed=seed,
                      prune_after_trials=prune_after_trials, jobs_flag="--trials", parallel_flag="--parallel")


def search_here(plan: Plan, data: Path, out: Path, runs_dir: Path, timeout_s: float | None,
                keep_models: bool) -> tuple[dict, int | None]:
    """Run `plan` here: (the summary, written with tuning.png into `out/<name>/`; the stopping signal or None)."""
    import optuna  # noqa: F401  (the `launch` extra: missing, nothing is prepared or written)

    stop = StopRequest()
    with stop.installed():
        check_folder(out, "--out")
        check_folder(runs_dir, "--runs-dir")
        data_dir = s3data.check_data_dir(data)
        s3data.ensure_prepared(data_dir)
        stop.raise_if_requested()
        count = plan.max_jobs if plan.max_jobs is not None else grid_size(plan.ranges)
        name, folder = new_folder(out, tuning_result.tuning_name)
        log(f"tuning {name}: {plan.search} search of {', '.join(r.name for r in plan.ranges)}, "
            f"{count} trial(s), {plan.max_parallel} at a time; trials in {folder}")
        started = time.perf_counter()
        done = trials.search(plan, data_dir, folder, trials=count, parallel=plan.max_parallel, timeout_s=timeout_s,
                             stop=stop, on_trial_end=lambda t: save_record(t, name, runs_dir))
        result = finish_local(name, plan, done, folder, runs_dir, round(time.perf_counter() - started, 1),
                              stopped=stop.signal is not None, keep_models=keep_models)
        tuning_result.write(folder, result, plan)
        with contextlib.suppress(OSError, UsageError):  # unrecorded, the files merely outlive `make clean`
            record_made(folder, "--out", tuning_result.ROLE)  # the trials' folders too (see `make clean`)
    return result, stop.signal


def save_record(trial: Trial, tuning_name: str, runs_dir: Path) -> None:
    """Save the trial's run record (the shape of `launch.records.report.summarize`, plus the tuning's fields)."""
    final = {k: v for k, v in trial.metrics.items() if k not in ("epoch", "best_epoch", "train_loss")}
    report.save(report.new_record(
        final, mode="tuning", job_name=f"{tuning_name}-{trial.number:03d}", status=trial.status,
        failure_reason=None if trial.status in (COMPLETED, PRUNED) else
        f"{trial.error or f'exit code {trial.exit_code}'}; see {trial.log_file}",
        instance_type=LOCAL, instance_count=1, spot=False, wall_seconds=trial.wall_seconds,
        model_artifact=trial.model_artifact,
        tuning_job=tuning_name, trial=trial.number, hyperparameters=dict(trial.hyperparameters),
        epochs_reported=trial.epochs, log=str(trial.log_file)), runs_dir)


def remove_model(model_dir: Path) -> None:
    """Remove the files the trial's training wrote into `model_dir` (as `make clean` does), then empty folders."""
    if not model_dir.is_dir():
        return
    remove_owned(model_dir, "--model_dir")
    for folder in sorted([model_dir, *(p for p in model_dir.rglob("*") if p.is_dir())], key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()


def finish_local(name: str, plan: Plan, done: list[Trial], folder: Path, runs_dir: Path, wall_seconds: float,
                 stopped: bool, keep_models: bool) -> dict:
    """The summary of a local search; every model but the best one's removed (unless `keep_models`), its record updated."""
    rows = [{"trial": t.number, "hyperparameters": t.hyperparameters, "status": t.status,
             **{k: t.metrics.get(k) for k in ("val_loss", "val_acc", "val_auroc", "test_acc")},
             "wall_seconds": t.wall_seconds, "job_name": f"{name}-{t.number:03d}", "instance_type": LOCAL,
             "model_artifact": t.model_artifact}
            for t in done]
    best = tuning_result.best_of(rows, plan)
    if not keep_models:
        for t, row in zip(done, rows):
            if (best is None or t.number != best["trial"]) and row["model_artifact"] is not None:
                remove_model(t.model_dir)
                row["model_artifact"] = None
                save_record(t, name, runs_dir)
    return tuning_result.summary(name, "local", plan, rows, wall_seconds, folder, stopped)

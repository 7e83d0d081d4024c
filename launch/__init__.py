"""Launch the training entry as a SageMaker training job, or emulate one on this machine.

From Python (a notebook, a script; see `launch.api`):

    import launch

    spec = launch.job_spec(instance_count=2, hyperparameters={"epochs": 20})
    run = launch.run_local(spec)                  # or launch.run_sagemaker(spec) on AWS
    launch.compare("runs/*.json").plot("compare.png")
    tuned = launch.tune_local(trials=4, parallel=2)  # or launch.tune_sagemaker(spec, max_jobs=20)
    tuned.best, tuned.best_model, tuned.picture
    on_slurm = launch.run_slurm(tasks_per_node=2, hyperparameters={"epochs": 5})   # sbatch, followed to the end

From the shell: `python launch/submit.py --help`, `python launch/tune.py --help`, `python launch/slurm.py --help`.
Modules and subpackages, one role each:

* `api` — the Python functions above and their result objects (`Run`, `Comparison`);
* `options` — the job flags `submit.py` and `tune.py` share, and the API's checks of the same arguments;
* `console` — the progress lines every step prints on stderr, the commands' argument parser, one-line errors;
* `jobs/` — one training job: `spec` (the JobSpec shared by `--dry-run`, a real submission and `--local`),
  `checks` (its values checked offline), `instances`, `prices`, `code` (the code the job ships), `s3data`
  (its channels), `wheelhouse` (its requirements as a channel), `remote` (the SDK's ModelTrainer: submit,
  follow), `local` (the job as SageMaker would run it, without Docker) with `container` (one host's /opt/ml,
  environment, command and Python), `folder` (the checkpoint store and artifacts) and `processes` (the
  hosts run, supervised and stopped), `slurm` (a SLURM job: `slurm.sbatch` with its values; `run_slurm`);
* `records/` — `report` (the run record, `runs/<job>.json`), `compare` (what `--compare` reads and
  prints), `charts` (`--plot`);
* `tuning/` — `space` (`--range` and the plan), `trials` (Optuna trials as entry processes, pruned on their
  epoch lines), `local` (the search here), `tuner` (the SDK's HyperparameterTuner around the same
  ModelTrainer), `result` (the summary, its table and `tuning.png`), `api` (`tune_local`,
  `tune_sagemaker`, `tuning_request`, `Tuning`).

`import launch` loads none of them: each public name loads `launch.api` (or `launch.tuning.api`,
`launch.jobs.slurm`) when first used, and the SageMaker SDK and torch load only when a function needs them.
"""

API = ("job_spec", "dry_run", "run_local", "run_sagemaker", "wait", "compare", "Run", "Comparison", "JobSpec",
       "UsageError")
TUNING_API = ("tune_local", "tune_sagemaker", "tuning_request", "Tuning")
SLURM_API = ("run_slurm",)
__all__ = [*API, *TUNING_API, *SLURM_API]


def __getattr__(name: str):
    if name in API:
        from launch import api

        return getattr(api, name)
    if name in TUNING_API:
        from launch.tuning import api as tuning_api

        return getattr(tuning_api, name)
    if name in SLURM_API:
        from launch.jobs import slurm

        return getattr(slurm, name)
    raise AttributeError(f"module 'launch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API, *TUNING_API, *SLURM_API})

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
Modules, one role each:

* `api` — the Python functions above and their result objects (`Run`, `Comparison`);
* `tuning_api` — tuning as Python functions (`tune_local`, `tune_sagemaker`, `tuning_request`) and `Tuning`;
* `instances` — the ml.* instance types this launcher knows (vCPUs, GPUs);
* `prices` — the dated on-demand price table (`prices.json`) and cost arithmetic;
* `job` — the job specification shared by `--dry-run`, a real submission and `--local`;
* `options` — the job flags `submit.py` and the tuning command share;
* `code` — stages the code the job ships (titanic_lightning/, entry/, requirements.txt);
* `s3data` — prepares the npz channels and uploads them, skipping unchanged objects;
* `remote` — builds the SDK's ModelTrainer from a spec, submits it, follows it;
* `local` — runs the job the way SageMaker would, one subprocess per host, without Docker;
* `report` — the run record, `runs/<job>.json`, and what `--compare` reads and prints;
* `search` — the tuning's search space (`--range`), checked by the entry's parser, and its plan;
* `trials` — the local search: Optuna trials as entry processes, pruned on their epoch lines;
* `tuning` — the SageMaker tuning job: the SDK's HyperparameterTuner around the same ModelTrainer;
* `tuning_result` — a tuning's summary, its table and `tuning.png`;
* `slurm_job` — a SLURM job: `slurm.sbatch` with the job's values, submitted, followed, recorded (`run_slurm`);
* `charts` — the comparison as a picture (`--compare ... --plot compare.png`);
* `console` — the progress lines every step prints on stderr, and the argument parser of submit.py and deploy.py.

`import launch` loads none of them: each public name loads `launch.api` (or `launch.tuning.api`) when first used, and the
SageMaker SDK and torch load only when a function needs them.
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

"""Launch the training entry as a SageMaker training job, a SLURM job, or emulate one on this machine.

From Python (a notebook, a script; see `launch.api`, `launch.tuning.api`, `launch.jobs.slurm`):

    import launch

    spec = launch.job_spec(instance_count=2, hyperparameters={"epochs": 20, "hidden_sizes": [64, 32]})
    launch.dry_run(spec)              # the job as it would be submitted (dict): image, channels, USD/hour
    run = launch.run_local(spec)      # emulated here; recorded in runs/<job>.json
    run.status, run.val_acc, run.wall_seconds, run.model_artifact
    real = launch.run_sagemaker(launch.job_spec(gpu=True, bucket="my-bucket", role="arn:aws:iam::..."))
    later = launch.run_sagemaker(spec, wait=False); launch.wait(later.job_name)
    runs = launch.compare("runs/*.json")   # also jobs/<job>/summary.json, tuning results, Run objects
    print(runs.table); runs.plot("compare.png")
    tuned = launch.tune_local(trials=4, parallel=2)  # or launch.tune_sagemaker(spec, max_jobs=20)
    tuned.best, tuned.best_model, tuned.picture
    on_slurm = launch.run_slurm(tasks_per_node=2, hyperparameters={"epochs": 5})   # sbatch, followed to the end

From the shell: `python launch/submit.py --help`, `python launch/tune.py --help`, `python launch/slurm.py --help`.
`import launch` loads nothing more: each public name loads its module when first used, and the
SageMaker SDK and torch load only when a function needs them.
"""

import importlib

_MODULES = {
    **dict.fromkeys(("job_spec", "dry_run", "run_local", "run_sagemaker", "wait", "compare", "Run", "Comparison",
                     "JobSpec", "UsageError"), "launch.api"),
    **dict.fromkeys(("tune_local", "tune_sagemaker", "tuning_request", "Tuning"), "launch.tuning.api"),
    "run_slurm": "launch.jobs.slurm",
}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'launch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


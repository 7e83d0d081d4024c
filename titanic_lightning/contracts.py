"""The names the library, the launcher (`launch/`) and the serving bundle agree on: splits, the
files a run reads and writes, and the metrics it reports.

Each is written here once. The SageMaker metric regexes (`launch.jobs.spec.METRIC_DEFINITIONS`) and the
run comparison's metric columns (`launch.records.compare`) are generated from the metric names, and a test
trains a tiny model and checks that every value it logs is one of them. This module imports
nothing, so every command, the serving container and `--help` can read it for free.
"""

from __future__ import annotations

# The project's name: its distribution, cache folder, record of written files, S3 prefix, job names.
PROJECT = "titanic-lightning"

# --- data channels -----------------------------------------------------------------------------

SPLITS = ("train", "val", "test")
PREPROCESSING_FILE = "preprocessing.json"  # beside the training data; in the `train` channel


def npz_name(split: str) -> str:
    """The file a split's arrays are kept in: `train_data.npz`, `val_data.npz`, `test_data.npz`."""
    return f"{split}_data.npz"


# --- what a run writes -------------------------------------------------------------------------

MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CHECKPOINT_FILE = "last.ckpt"
CURVES_FILE = "curves.png"
# The log of a job of launch/slurm.sbatch (SLURM writes it where the job was submitted), and the
# line the script writes into it first.
SLURM_LOG = "slurm-titanic-{job_id}.out"
SLURM_LOG_START = "titanic: job {job_id} "

# --- metrics -----------------------------------------------------------------------------------

# What the model logs for each evaluated split, named `<split>_<name>`: its loss and three scores.
EVALUATED = ("loss", "acc", "auroc", "f1")


def split_metrics(split: str) -> tuple[str, ...]:
    return tuple(f"{split}_{name}" for name in EVALUATED)


# The metrics of each validated epoch, printed on its `epoch=N; ...` line.
EPOCH_METRICS = ("train_loss", *split_metrics("val"))
# The metrics of the best weights, printed on the `final: ...` line and saved in metrics.json.
FINAL_METRICS = (*split_metrics("val"), *split_metrics("test"))
# The keys each kind of line starts with: the epoch's number; the best epoch and how many ran.
EPOCH_LINE = ("epoch", *EPOCH_METRICS)
FINAL_LINE = ("best_epoch", "epochs_run", *FINAL_METRICS)
# The metrics `launch/submit.py --compare` shows, one column each.
COMPARED_METRICS = ("val_acc", "test_acc")

"""Where a training run reads and writes, resolved before torch is imported.

Flags win; otherwise the environment's defaults (SageMaker channels and folders, else `./data/`,
`./model/`, `./outputs/`). On a fresh clone with no data, `./data/` is prepared from the Titanic CSV.
Every output folder is checked before anything is prepared or trained (see `outputs`): it can be
written, and it holds no file of a name the run writes that an earlier run of this project did not.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from titanic_lightning import environment
from titanic_lightning.config import TrainConfig
from titanic_lightning.contracts import CHECKPOINT_FILE, CURVES_FILE, PREPROCESSING_FILE, SPLITS
from titanic_lightning.errors import UsageError
from titanic_lightning.prepare import load_preprocessing

CSV_LOGS = "csv"  # Lightning's CSVLogger folder under the output directory
TENSORBOARD_LOGS = "tensorboard"


@dataclass(frozen=True)
class Layout:
    train: Path
    val: Path
    test: Path | None
    preprocessing: dict | None
    model_dir: Path
    output_dir: Path
    checkpoint_dir: Path | None  # where last.ckpt is written and resumed from, or None


# What Lightning's loggers write in place under the output directory (TensorBoard's event files
# get new names every run): claimed before they are written (`outputs.Writer.claim`).
LOG_FILES = (f"{CSV_LOGS}/metrics.csv", f"{CSV_LOGS}/hparams.yaml", f"{TENSORBOARD_LOGS}/hparams.yaml")


def output_dir_files() -> list[str]:
    """The files a run writes into its output directory."""
    return [CURVES_FILE, *LOG_FILES]


def check_outputs(model_dir: Path, output_dir: Path, checkpoint_dir: Path | None) -> None:
    from titanic_lightning import outputs
    from titanic_lightning.artifacts import ROLE, check_model_dir

    check_model_dir(model_dir)
    outputs.check_folder(output_dir, "--output_dir")
    outputs.check_owned(output_dir, output_dir_files(), "--output_dir", ROLE)
    if checkpoint_dir is not None:
        outputs.check_folder(checkpoint_dir, "--checkpoint_dir")
        # last.ckpt is replaced only after the resume check has read it as this run's own checkpoint.
        last = Path(checkpoint_dir) / CHECKPOINT_FILE
        if last.is_symlink() or (last.exists() and not last.is_file()):
            raise UsageError(f"--checkpoint_dir {checkpoint_dir}: {last} is not a regular file; move it away or "
                             "choose another --checkpoint_dir")


def _prepare_local_data(cfg: TrainConfig) -> None:
    from titanic_lightning.csv_source import resolve_csv
    from titanic_lightning.prepare import check_prepare_outputs, prepare

    flag = "--train (default data folder)"
    check_prepare_outputs(environment.LOCAL_DATA_DIR, flag)
    csv = resolve_csv(cfg.csv)
    description = prepare(csv, environment.LOCAL_DATA_DIR, cfg.features, flag)
    print(f"prepared {environment.LOCAL_DATA_DIR}/ from {csv}: rows {description['rows']}", file=sys.stderr)


def resolve(cfg: TrainConfig) -> Layout:
    model_dir = Path(cfg.model_dir) if cfg.model_dir else environment.default_model_dir()
    output_dir = Path(cfg.output_dir) if cfg.output_dir else environment.default_output_dir()
    checkpoint_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else environment.default_checkpoint_dir()
    check_outputs(model_dir, output_dir, checkpoint_dir)
    mounted = environment.sagemaker_channels()
    explicit = any(getattr(cfg, s) for s in SPLITS) or bool(mounted)
    train = Path(cfg.train) if cfg.train else environment.default_channel("train", mounted)
    val = Path(cfg.val) if cfg.val else environment.default_channel("val", mounted)
    if not train.exists():
        if explicit:
            raise UsageError(f"--train {train}: no such file or directory")
        _prepare_local_data(cfg)  # writes the default train (and val) channel
    if not val.exists():
        raise UsageError(f"--val {val}: no such file or directory")
    # The default test channel belongs to the default layout: explicit --train/--val paths do not
    # silently pick up ./data/test_data.npz.
    if cfg.test:
        test = Path(cfg.test)
        if not test.exists():
            raise UsageError(f"--test {test}: no such file or directory")
    elif "test" in mounted or not (cfg.train or cfg.val):
        default_test = environment.default_channel("test", mounted)
        test = default_test if default_test.exists() else None
    else:
        test = None

    beside = (train if train.is_dir() else train.parent) / PREPROCESSING_FILE
    if cfg.preprocessing:
        preprocessing = load_preprocessing(Path(cfg.preprocessing))
    elif beside.is_file():
        preprocessing = load_preprocessing(beside)
    else:
        preprocessing = None
        print(
            f"warning: no {PREPROCESSING_FILE} beside {train}; model.pt will hold the network but cannot score raw passenger rows",
            file=sys.stderr,
        )
    return Layout(
        train=train,
        val=val,
        test=test,
        preprocessing=preprocessing,
        model_dir=model_dir,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
    )

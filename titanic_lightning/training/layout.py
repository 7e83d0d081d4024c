"""Where a training run reads and writes, resolved before torch is imported.

Flags win; otherwise the environment's defaults (SageMaker channels and folders, else `./data/`,
`./model/`, `./outputs/`). On a fresh clone with no data, `./data/` is prepared from the Titanic CSV.
Every output folder is checked and locked before anything is prepared or trained (see `outputs`): it
can be written, no other command holds it, and it holds no file of a name the run writes that an
earlier run of this project did not. The data folders are locked for reading.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from titanic_lightning import environment
from titanic_lightning.config import TrainConfig
from titanic_lightning.contracts import CHECKPOINT_FILE, CURVES_FILE, PREPROCESSING_FILE, SPLITS
from titanic_lightning.data.prepare import load_preprocessing
from titanic_lightning.errors import UsageError

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
# get new names every run): recorded as this project's when the run ends (`outputs.writing`).
LOG_FILES = (f"{CSV_LOGS}/metrics.csv", f"{CSV_LOGS}/hparams.yaml", f"{TENSORBOARD_LOGS}/hparams.yaml")
WAIT_FOR_DATA_S = 300  # how long a run waits for another process of the same run preparing ./data/


def output_dir_files() -> list[str]:
    """The files a run writes into its output directory."""
    return [CURVES_FILE, *LOG_FILES]


def hold_outputs(held: ExitStack, model_dir: Path, output_dir: Path, checkpoint_dir: Path | None) -> None:
    """Check the output folders and lock them for the whole run (global rank 0, the one writer)."""
    from titanic_lightning.io import outputs
    from titanic_lightning.io.artifacts import FLAG, ROLE, model_dir_files

    for folder, flag in ((model_dir, FLAG), (output_dir, "--output_dir"), (checkpoint_dir, "--checkpoint_dir")):
        if folder is not None:
            outputs.check_folder(folder, flag)
    if checkpoint_dir is not None:
        # last.ckpt is replaced only after the resume check has read it as this run's own checkpoint.
        last = Path(checkpoint_dir) / CHECKPOINT_FILE
        if last.is_symlink() or (last.exists() and not last.is_file()):
            raise UsageError(f"--checkpoint_dir {checkpoint_dir}: {last} is not a regular file; move it away or "
                             "choose another --checkpoint_dir")
    if not environment.is_global_zero():
        return
    outputs.check_owned(model_dir, model_dir_files(), FLAG, ROLE)  # both before either folder is made
    outputs.check_owned(output_dir, output_dir_files(), "--output_dir", ROLE)
    held.enter_context(outputs.writing(model_dir, [], FLAG, ROLE))  # its files are recorded as they are written
    held.enter_context(outputs.writing(output_dir, output_dir_files(), "--output_dir", ROLE, in_place=LOG_FILES,
                                       new_in=[TENSORBOARD_LOGS]))
    if checkpoint_dir is not None:
        held.enter_context(outputs.writing(checkpoint_dir, [], "--checkpoint_dir", ROLE, rewritten=[CHECKPOINT_FILE]))


def _prepare_local_data(cfg: TrainConfig, held: ExitStack) -> None:
    """Prepare ./data/ once per run: the process that gets its lock first prepares it, the run's
    other processes wait for it (at most WAIT_FOR_DATA_S), then all read it."""
    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.data.prepare import ROLE, check_prepare_outputs, prepared_files, write_prepared
    from titanic_lightning.io import locks, outputs

    data, flag = environment.LOCAL_DATA_DIR, "--train (default data folder)"
    train = environment.default_channel("train", {})
    check_prepare_outputs(data, flag)
    csv = resolve_csv(cfg.csv)
    deadline = time.monotonic() + WAIT_FOR_DATA_S
    while True:
        try:
            if train.exists():
                held.enter_context(locks.reading(data, flag))
                return
            with outputs.writing(data, prepared_files(), flag, ROLE) as files:
                if not train.exists():
                    description = write_prepared(files, csv, cfg.features, flag)
                    print(f"prepared {data}/ from {csv}: rows {description['rows']}", file=sys.stderr)
        except locks.Busy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_rows(preprocessing: dict, named: str, channels: dict[str, Path | None]) -> None:
    """The row counts a preprocessing description states (`rows`, as `entry.prepare` writes them)
    equal the channels' (read from the npz headers): a description of other data would be saved
    into model.pt as the transform of this model's inputs."""
    stated = preprocessing.get("rows")
    if stated is None:  # a description written by hand or by other tools may leave them out
        return
    if not isinstance(stated, dict):
        raise UsageError(f"{named}: rows must map each split to its row count, not {stated!r:.60}")
    from titanic_lightning.data.channels import channel_files, check_headers

    differences = []
    for split, channel in channels.items():
        if channel is None or split not in stated:
            continue
        count = stated[split]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise UsageError(f"{named}: rows.{split} must be a whole number >= 0, not {count!r:.60}")
        held = sum(check_headers(f, split)[2][0] for f in channel_files(channel))
        if held != count:
            differences.append(f"{count} {split} rows, but --{split} {channel} holds {held}")
    if differences:
        raise UsageError(f"{named}: describes {'; '.join(differences)}; pass the preprocessing.json "
                         "these channels were prepared with")


def resolve(cfg: TrainConfig, held: ExitStack | None = None) -> Layout:
    """The run's layout, with its folders locked in `held` until the run ends: the output folders
    exclusively (global rank 0), the data folders shared (every process). Without `held`, the
    folders are checked and released at once."""
    if held is None:
        with ExitStack() as held:
            return resolve(cfg, held)
    model_dir = Path(cfg.model_dir) if cfg.model_dir else environment.default_model_dir()
    output_dir = Path(cfg.output_dir) if cfg.output_dir else environment.default_output_dir()
    checkpoint_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else environment.default_checkpoint_dir()
    hold_outputs(held, model_dir, output_dir, checkpoint_dir)
    mounted = environment.sagemaker_channels()
    explicit = any(getattr(cfg, s) for s in SPLITS) or bool(mounted)
    train = Path(cfg.train) if cfg.train else environment.default_channel("train", mounted)
    val = Path(cfg.val) if cfg.val else environment.default_channel("val", mounted)
    if not train.exists():
        if explicit:
            raise UsageError(f"--train {train}: no such file or directory")
        _prepare_local_data(cfg, held)  # writes the default train (and val) channel
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

    # Locked before anything is read: no command rewrites the data while this run reads it.
    from titanic_lightning.io.locks import reading
    from titanic_lightning.io.outputs import same_file

    written = [d for d in (model_dir, output_dir, checkpoint_dir) if d is not None]
    read = (train, val, test, Path(cfg.preprocessing) if cfg.preprocessing else None)
    for path, flag in zip(read, ("--train", "--val", "--test", "--preprocessing")):
        folder = None if path is None else path if path.is_dir() else path.parent
        if folder is not None and not any(same_file(folder, d) for d in written):  # held for writing already
            held.enter_context(reading(folder, flag))
    beside = (train if train.is_dir() else train.parent) / PREPROCESSING_FILE
    if cfg.preprocessing:
        preprocessing = load_preprocessing(Path(cfg.preprocessing))
        check_rows(preprocessing, f"--preprocessing {cfg.preprocessing}", {"train": train, "val": val, "test": test})
    elif beside.is_file():
        preprocessing = load_preprocessing(beside)
        check_rows(preprocessing, f"{beside} (beside --train)", {"train": train, "val": val, "test": test})
    else:
        preprocessing = None
    if preprocessing is None and environment.is_global_zero():  # said once, not once per process
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

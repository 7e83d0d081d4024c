"""The command lines of the `entry.*` commands, parsed by jsonargparse.

One flat set of `--key value` options: the form SageMaker passes hyperparameters in (every value a
string, booleans as `true`/`false`), and the lesson's own flags (`--train --val --epochs
--learning_rate`) unchanged. Types carry the constraints, so a bad value is rejected with its flag
named; an unknown or misspelled flag is an error, never silently ignored. This module imports
neither torch nor Lightning, so `--help` and argument errors answer at once.

As in LightningCLI, every command also takes `--config FILE` (a YAML mapping of flag names to
values; flags after it override it) and `--print_config`, which prints the full resolved
configuration as YAML and exits: fed back with `--config`, it gives the same configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from jsonargparse.typing import PositiveInt, restricted_number_type

from titanic_lightning import cli
from titanic_lightning.data.features import DEFAULT_FEATURE_SET
from titanic_lightning.environment import DEFAULT_PROCESS_GROUP_TIMEOUT_S
from titanic_lightning.sagemaker_facts import LONGEST_JOB_S

# Bounds that keep a value from failing late (an overflow, an allocation) or training silently
# wrong (inf and nan compare as numbers): each is named in --help through its type.
MAX_HIDDEN_WIDTH = 4096  # 64x the lesson's widest layer; 16 such layers are ~1 GiB of weights and Adam state
MAX_HIDDEN_LAYERS = 16
MAX_SEED = 2**32 - 1  # numpy's seed range, which seed_everything would otherwise replace by 0

Dropout = restricted_number_type("Dropout", float, [(">=", 0.0), ("<", 1.0)])
# The optimiser's values become float32 tensors (torch's default dtype): a larger one overflows there.
FLOAT32_MAX = 3.4028234663852886e38
FinitePositiveFloat = restricted_number_type("FinitePositiveFloat", float, [(">", 0.0), ("<=", FLOAT32_MAX)])
FiniteNonNegativeFloat = restricted_number_type("FiniteNonNegativeFloat", float, [(">=", 0.0), ("<=", FLOAT32_MAX)])
# No interval needs more than SageMaker's longest training job (LONGEST_JOB_S, 2,419,200 s).
Seconds = restricted_number_type("Seconds", float, [(">", 0.0), ("<=", float(LONGEST_JOB_S))])
WholeSeconds = restricted_number_type("WholeSeconds", int, [(">", 0), ("<=", LONGEST_JOB_S)])
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", MAX_SEED)])
HiddenWidth = restricted_number_type("HiddenWidth", int, [(">", 0), ("<=", MAX_HIDDEN_WIDTH)])


@dataclass
class TrainConfig:
    """Train the Titanic MLP with Lightning: locally, on a GPU, under torchrun or on SageMaker.

    Args:
        train: Training channel: an .npz file or a directory of them (default: $SM_CHANNEL_TRAIN, else data/train_data.npz).
        val: Validation channel (default: $SM_CHANNEL_VAL, else data/val_data.npz).
        test: Test channel, evaluated on the best weights (default: $SM_CHANNEL_TEST, else data/test_data.npz when present).
        csv: Titanic CSV used to create ./data when it is missing (default: $TITANIC_CSV, cache, download).
        features: Feature set used when ./data has to be prepared.
        preprocessing: preprocessing.json saved into model.pt (default: the one beside the training data).
        model_dir: Where model.pt and metrics.json go (default: $SM_MODEL_DIR, else model/).
        output_dir: Where logs and curves.png go (default: $SM_OUTPUT_DATA_DIR, else outputs/).
        checkpoint_dir: Where last.ckpt goes; a run resumes from the last.ckpt found there
            (default: $TITANIC_CHECKPOINT_DIR, else /opt/ml/checkpoints when it exists, else none).
        checkpoint_every_n_epochs: Save last.ckpt every N epochs.
        checkpoint_every_n_seconds: Also save last.ckpt inside epochs once N seconds have passed since the last
            timed save (for long epochs; a resumed run continues from the saved batch), at most 28 days.
            Default: epoch ends only.
        epochs: Maximum number of epochs.
        learning_rate: Optimiser learning rate (finite, above 0).
        weight_decay: Weight decay (L2 for adam, decoupled for adamw; finite, 0 or more).
        optimizer: Optimiser.
        batch_size: Rows per step on each process; a size at least the split's is full-batch training.
        hidden_sizes: Widths of the hidden layers: at most 16 layers, each 1 to 4096 wide.
        dropout: Dropout after each hidden layer.
        early_stopping: Stop when val_loss has not improved for `patience` epochs; false runs every epoch.
        patience: Epochs without val_loss improvement before stopping.
        seed: Seed for weights, shuffling and dropout, 0 to 2**32-1.
        accelerator: cpu, gpu or auto (auto: the environment decides).
        devices: Processes per node (default: the environment decides).
        num_nodes: Number of nodes (default: the environment decides).
        strategy: auto, ddp, ddp_smddp, fsdp, tensor_parallel, or package.module:factory.
        tensor_parallel_size: With --strategy tensor_parallel: processes that split each layer between them
            (default: the processes per node); the remaining factor of all processes trains data parallel.
        cpu_processes: Processes per node when training on CPU without torchrun.
        process_group_timeout: Seconds to wait for a lost peer before failing the job (at most 28 days).
        fast_dev_run: Lightning's smoke test: run N batches (true: 1) of training, validation and test
            through the whole entry, then stop; nothing is resumed, logged, checkpointed or saved.
        debug: Show tracebacks instead of one-line errors.
    """

    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None
    csv: Optional[str] = None
    features: Literal["basic", "rich"] = DEFAULT_FEATURE_SET
    preprocessing: Optional[str] = None
    model_dir: Optional[str] = None
    output_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    checkpoint_every_n_epochs: PositiveInt = 1
    checkpoint_every_n_seconds: Optional[Seconds] = None
    epochs: PositiveInt = 500
    learning_rate: FinitePositiveFloat = 1e-3
    weight_decay: FiniteNonNegativeFloat = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"
    batch_size: PositiveInt = 32
    hidden_sizes: list[HiddenWidth] = field(default_factory=lambda: [64, 32])
    dropout: Dropout = 0.0
    early_stopping: bool = True
    patience: PositiveInt = 20
    seed: Seed = 42
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: Optional[PositiveInt] = None
    num_nodes: Optional[PositiveInt] = None
    strategy: str = "auto"
    tensor_parallel_size: Optional[PositiveInt] = None
    cpu_processes: PositiveInt = 1
    process_group_timeout: WholeSeconds = DEFAULT_PROCESS_GROUP_TIMEOUT_S
    fast_dev_run: Union[bool, PositiveInt] = False
    debug: bool = False


@dataclass
class PrepareConfig:
    """Split the Titanic CSV and write the npz channels and preprocessing.json.

    Args:
        csv: Titanic CSV (default: $TITANIC_CSV, then the user cache, then a verified download).
        out: Output directory.
        features: basic (the lesson's seven columns) or rich (titles, family, cabin, one-hot port).
        debug: Show tracebacks instead of one-line errors.
    """

    csv: Optional[str] = None
    out: str = "data"
    features: Literal["basic", "rich"] = DEFAULT_FEATURE_SET
    debug: bool = False


@dataclass
class PredictConfig:
    """Score Kaggle-format passenger rows with a trained model.

    Args:
        model: A model directory, its model.pt, a model.tar.gz, or an s3://bucket/key URI of one.
        csv: Kaggle-format CSV (Survived optional; with it, accuracy and AUROC are printed).
        out: Output CSV (PassengerId,probability,prediction); default: standard output.
        debug: Show tracebacks instead of one-line errors.
    """

    model: str
    csv: str
    out: Optional[str] = None
    debug: bool = False


@dataclass
class ExportConfig:
    """Export a trained model with its preprocessing constants as one self-contained file.

    Args:
        model: A model directory, its model.pt, a model.tar.gz, or an s3://bucket/key URI of one.
        format: torchscript (a .pt for torch.jit.load) or onnx (needs the `onnx` extra).
        out: Output file (default: titanic.pt or titanic.onnx in the current directory).
        debug: Show tracebacks instead of one-line errors.
    """

    model: str
    format: Literal["torchscript", "onnx"] = "torchscript"
    out: Optional[str] = None
    debug: bool = False


def _check_hidden_layers(cfg) -> None:
    hidden_sizes = cfg.get("hidden_sizes")
    if hidden_sizes is not None and len(hidden_sizes) > MAX_HIDDEN_LAYERS:
        raise TypeError(f'Parser key "hidden_sizes": {len(hidden_sizes)} layers; at most {MAX_HIDDEN_LAYERS}')


# The checks no single flag's type makes, per configuration dataclass.
CHECKS = {TrainConfig: (_check_hidden_layers,)}


def _parse(cls: type, prog: str, argv: list[str]):
    return cli.parse(cls, prog, argv, CHECKS.get(cls, ()))


def parse_train_args(argv: list[str]) -> TrainConfig:
    return _parse(TrainConfig, "python -m entry.train", argv)


def parse_prepare_args(argv: list[str]) -> PrepareConfig:
    cfg = _parse(PrepareConfig, "python -m entry.prepare", argv)
    from pathlib import Path

    cfg.out = Path(cfg.out)
    return cfg


def parse_predict_args(argv: list[str]) -> PredictConfig:
    return _parse(PredictConfig, "python -m entry.predict", argv)


def parse_export_args(argv: list[str]) -> ExportConfig:
    return _parse(ExportConfig, "python -m entry.export", argv)

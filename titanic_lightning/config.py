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

import math
import re
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from jsonargparse import ActionConfigFile, ArgumentParser, get_loader, set_dumper
from jsonargparse.typing import PositiveInt, restricted_number_type

from titanic_lightning.environment import DEFAULT_PROCESS_GROUP_TIMEOUT_S
from titanic_lightning.errors import UsageError
from titanic_lightning.features import DEFAULT_FEATURE_SET
from titanic_lightning.sagemaker_facts import LONGEST_JOB_S

# Bounds that keep a value from failing late (an overflow, an allocation) or training silently
# wrong (inf and nan compare as numbers): each is named in --help through its type.
MAX_HIDDEN_WIDTH = 4096  # 64x the lesson's widest layer; 16 such layers are ~1 GiB of weights and Adam state
MAX_HIDDEN_LAYERS = 16
MAX_SEED = 2**32 - 1  # numpy's seed range, which seed_everything would otherwise replace by 0

Dropout = restricted_number_type("Dropout", float, [(">=", 0.0), ("<", 1.0)])
FinitePositiveFloat = restricted_number_type("FinitePositiveFloat", float, [(">", 0.0), ("<", math.inf)])
FiniteNonNegativeFloat = restricted_number_type("FiniteNonNegativeFloat", float, [(">=", 0.0), ("<", math.inf)])
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


def _exact_yaml_dump(data) -> str:
    """jsonargparse's YAML dump, but quoting each string its YAML loader would read back as something
    else: PyYAML writes `1e3` plain, and jsonargparse reads it as the float 1000.0."""
    import yaml

    load = get_loader("yaml")

    def represent_str(dumper, value: str):
        try:
            plain = load(value) == value
        except Exception:  # noqa: BLE001 - not loadable as written: quote it
            plain = False
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else "'")

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, represent_str)
    return yaml.dump(data, Dumper=Dumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


EXACT_YAML = "titanic_exact_yaml"
set_dumper(EXACT_YAML, _exact_yaml_dump)


class _CommandParser(ArgumentParser):
    """jsonargparse's parser, plus the configuration's own checks (`CHECKS`) and a YAML dump that
    reads back as written.

    jsonargparse validates a configuration after parsing it and before `--print_config` prints it,
    so every value a printed configuration holds passes the command's checks.
    """

    def __init__(self, *args, checks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.checks = checks

    def validate(self, cfg, *args, **kwargs) -> None:
        super().validate(cfg, *args, **kwargs)
        for check in self.checks:
            check(cfg)

    def dump(self, cfg, format: str = "parser_mode", *args, **kwargs) -> str:
        if format == "parser_mode" and not kwargs.get("with_comments"):
            format = EXACT_YAML
        return super().dump(cfg, format, *args, **kwargs)


class _ConfigFile(ActionConfigFile):
    """jsonargparse's `--config`, with whatever is wrong in the file reported naming the file.

    jsonargparse checks each value as it loads the file, but its unknown keys only at the end of
    parsing, where the file is no longer known: they are checked here, as each file is read.
    """

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            super().__call__(parser, cfg, values, option_string)
            parser.validate(cfg, skip_required=True)
        except Exception as exc:  # noqa: BLE001 - jsonargparse raises TypeError, KeyError, ArgumentError, ...
            raise TypeError(f"{option_string} {values}: {_config_message(str(exc))}") from None


def _config_message(text: str) -> str:
    text = re.sub(r'^Parser key "config":\s*', "", text.strip())
    text = re.sub(r'Parser key "([^"]+)":', r"\1:", text)
    text = re.sub(r"^Option '([^']+)' is not accepted$", r"unknown key '\1'", text)
    text = re.sub(r"^Validation failed: Key '([^']+)' is not expected$", r"unknown key '\1'", text)  # jsonargparse 4.43
    return re.sub(r"^Unexpected config:.*", "not a YAML mapping of flag names to values", text, flags=re.S)


def _parser(cls: type, prog: str) -> ArgumentParser:
    parser = _CommandParser(
        prog=prog, description=cls.__doc__.split("\n\n")[0], exit_on_error=False, allow_abbrev=False,
        checks=CHECKS.get(cls, ()),
    )
    parser.add_argument("--config", action=_ConfigFile,
                        help="A YAML file of flag values, as --print_config writes it; later flags override it.")
    parser.add_class_arguments(cls, nested_key=None, as_group=False)
    return parser


def _parse(cls: type, prog: str, argv: list[str]):
    parser = _parser(cls, prog)
    # --print_config prints "after applying all other arguments", but jsonargparse 4.53 prints a
    # --config file read after it on its own and exits: it goes last.
    printing = [a for a in argv if a == "--print_config" or a.startswith("--print_config=")]
    argv = [a for a in argv if a not in printing] + printing
    try:
        namespace = parser.parse_args(argv)  # with --print_config: prints and exits (SystemExit 0)
    except Exception as exc:  # jsonargparse raises argparse.ArgumentError and friends
        raise UsageError(_flag_message(str(exc))) from None
    namespace.pop("config", None)  # the files read, not a setting
    return cls(**{k: _plain(v) for k, v in namespace.as_dict().items()})


def _plain(value):
    """Restricted types (PositiveInt, ...) back to builtins: checkpoints must load weights-only."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _flag_message(text: str) -> str:
    text = re.sub(r'Parser key "([^"]+)":', r"--\1:", text)
    text = re.sub(r"^Unrecognized arguments", "unrecognized arguments", text)  # argparse's wording, as newer jsonargparse
    return " ".join(text.split())


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

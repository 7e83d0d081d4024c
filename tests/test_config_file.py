"""`--config FILE` and `--print_config`, as LightningCLI users expect them: the printed configuration,
fed back, is the same configuration; later flags override the file; a bad file is one line naming it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import entry.train
from tests.helpers import clean_env, invoke, run_entry
from titanic_lightning import config
from titanic_lightning.command import debug_requested
from titanic_lightning.errors import UsageError

# Values chosen to survive a YAML round trip only if they are quoted and typed right: strings that
# read as booleans, null or numbers, quotes, colons, a comment sign, non-ASCII, extreme floats.
TRAIN_FLAGS = [
    "--train", "data dir/it's: #1 \"x\".npz", "--val", "null.npz", "--test", "yes", "--csv", "1e3",
    "--model_dir", "módel", "--output_dir", "- item", "--checkpoint_dir", "~/ck",
    "--checkpoint_every_n_epochs", "3", "--checkpoint_every_n_seconds", "0.5", "--epochs", str(10**30),
    "--learning_rate", "3e38", "--weight_decay", "1e-300", "--optimizer", "adamw", "--batch_size", "7",
    "--hidden_sizes", "[4096, 1, 3]", "--dropout", "0.999", "--early_stopping", "false", "--patience", "2",
    "--seed", str(2**32 - 1), "--accelerator", "cpu", "--devices", "2", "--num_nodes", "3",
    "--strategy", "pkg.mod:factory", "--cpu_processes", "4", "--process_group_timeout", "2419200",
    "--fast_dev_run", "3", "--features", "basic", "--debug", "false",
]

COMMANDS = {
    "train": (config.parse_train_args, TRAIN_FLAGS),
    "prepare": (config.parse_prepare_args, ["--csv", "a: b.csv", "--out", "true", "--features", "basic"]),
    "predict": (config.parse_predict_args, ["--model", "s3://b/k.tar.gz", "--csv", "'q'.csv", "--out", "[a]"]),
    "export": (config.parse_export_args, ["--model", "model/", "--format", "onnx", "--out", "1.0"]),
}


def printed_config(parse, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        parse([*argv, "--print_config"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def same(a, b) -> bool:
    """Equal field by field, types included (True is not 1, 1.0 is not 1)."""
    fields_a, fields_b = dataclasses.asdict(a), dataclasses.asdict(b)
    return fields_a == fields_b and all(type(fields_a[k]) is type(fields_b[k]) for k in fields_a)


@pytest.mark.parametrize("command", COMMANDS)
def test_the_printed_configuration_fed_back_is_the_same_configuration(command, tmp_path, capsys):
    parse, argv = COMMANDS[command]
    text = printed_config(parse, argv, capsys)
    (tmp_path / "run.yaml").write_text(text)
    from_flags, from_file = parse(argv), parse(["--config", str(tmp_path / "run.yaml")])
    assert same(from_file, from_flags), (text, from_file, from_flags)
    import yaml

    assert list(yaml.safe_load(text)) == [f.name for f in dataclasses.fields(from_flags)]  # no config key
    # Printed again from the file: the same text, so the file is the whole configuration.
    assert printed_config(parse, ["--config", str(tmp_path / "run.yaml")], capsys) == text


@pytest.mark.parametrize("fast_dev_run", ["true", "1", "false"])
def test_a_bool_or_int_flag_keeps_its_type_through_the_file(fast_dev_run, tmp_path, capsys):
    text = printed_config(config.parse_train_args, ["--fast_dev_run", fast_dev_run], capsys)
    (tmp_path / "run.yaml").write_text(text)
    assert same(config.parse_train_args(["--config", str(tmp_path / "run.yaml")]),
                config.parse_train_args(["--fast_dev_run", fast_dev_run]))


def test_print_config_prints_after_every_other_flag(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("epochs: 7\n")
    argv = ["--seed", "3", "--config", str(tmp_path / "run.yaml"), "--patience", "4"]
    for at in range(len(argv) + 1):
        text = printed_config(config.parse_train_args, [*argv[:at], "--print_config", *argv[at:]], capsys)
        assert text == printed_config(config.parse_train_args, argv, capsys)
        assert {"seed: 3", "epochs: 7", "patience: 4", "learning_rate: 0.001"} <= set(text.splitlines()), at


def test_the_printed_defaults_are_every_field(capsys):
    import yaml

    printed = yaml.safe_load(printed_config(config.parse_train_args, [], capsys))
    assert printed == dataclasses.asdict(config.TrainConfig())


def test_later_flags_override_the_file_and_the_file_overrides_earlier_ones(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 7\nlearning_rate: 0.01\nhidden_sizes: [8]\n")
    run = str(tmp_path / "run.yaml")
    cfg = config.parse_train_args(["--epochs", "3", "--config", run, "--hidden_sizes", "[4, 2]"])
    assert (cfg.epochs, cfg.learning_rate, cfg.hidden_sizes) == (7, 0.01, [4, 2])
    assert config.parse_train_args([f"--config={run}", "--epochs=9"]).epochs == 9
    (tmp_path / "more.yaml").write_text("epochs: 11\n")
    cfg = config.parse_train_args(["--config", run, "--config", str(tmp_path / "more.yaml")])
    assert (cfg.epochs, cfg.learning_rate) == (11, 0.01)


BAD_FILES = [
    # (name, content or None for no file, the words after "--config <path>: ")
    ("missing.yaml", None, "File does not exist"),
    ("broken.yaml", "epochs: [3\n", "Problems parsing config"),
    ("list.yaml", "- 1\n- 2\n", "not a YAML mapping of flag names to values"),
    ("empty.yaml", "", "not a YAML mapping of flag names to values"),
    ("typo.yaml", "epochs: 3\nepoch: 4\n", "unknown key 'epoch'"),
    ("print.yaml", "print_config: true\n", "unknown key 'print_config'"),
    ("value.yaml", "epochs: 0\n", "epochs: Not of type PositiveInt"),
    ("nan.yaml", "learning_rate: .nan\n", "learning_rate: Not of type FinitePositiveFloat"),
    ("deep.yaml", f"hidden_sizes: {[8] * (config.MAX_HIDDEN_LAYERS + 1)}\n", "hidden_sizes: 17 layers; at most 16"),
]


@pytest.mark.parametrize("name, content, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_file_is_one_line_naming_it(name, content, words, tmp_path):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError) as exc:
        config.parse_train_args(["--config", str(path), "--epochs", "5"])
    message = str(exc.value)
    assert message.startswith(f"--config {path}: {words}"), message
    assert "\n" not in message


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(UsageError, match=f"^--config {tmp_path}: Path is not a file"):
        config.parse_train_args(["--config", str(tmp_path)])


def test_the_entry_ends_a_bad_file_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("epochs: 3\nlearning_rat: 0.1\n")
    code, out, err = invoke(entry.train.main, ["--config", "run.yaml"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == ["error: --config run.yaml: unknown key 'learning_rat'"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_the_printed_configuration_is_checked_first(capsys):
    with pytest.raises(UsageError, match="^--hidden_sizes: 17 layers; at most 16"):
        config.parse_train_args(["--hidden_sizes", str([8] * 17), "--print_config"])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("content, after, on, over_true", [
    # (file, flags after it, debug_requested(--config F, *after), debug_requested(--debug true --config F))
    ("debug: true\n", [], True, True), ("debug: yes\n", [], True, True), ("debug: 'on'\n", [], True, True),
    ("debug: false\n", [], False, False), ("epochs: 3\n", [], False, True),
    ("debug: true\n", ["--debug", "false"], False, True), ("debug: 1\n", [], False, False),
    ("[not yaml\n", [], False, True),
])
def test_debug_in_a_config_file_counts(content, after, on, over_true, tmp_path):
    (tmp_path / "run.yaml").write_text(content)
    assert debug_requested(["--config", str(tmp_path / "run.yaml"), *after]) is on
    assert debug_requested(["--debug", "true", f"--config={tmp_path / 'run.yaml'}"]) is over_true


def test_debug_in_a_config_file_shows_the_traceback(tmp_path):
    from titanic_lightning.command import run_command

    def fails(argv):
        raise RuntimeError("boom")

    (tmp_path / "run.yaml").write_text("debug: true\n")
    with pytest.raises(RuntimeError, match="boom"):
        run_command(fails, ["--config", str(tmp_path / "run.yaml")])


def test_config_and_print_config_are_not_hyperparameters():
    from launch.jobs import checks

    for key in ("config", "print_config"):
        with pytest.raises(UsageError, match=f"^--hp {key}=x: '{key}' is not a flag of entry/train.py"):
            checks.parse_hyperparameters([f"{key}=x"])


def test_print_config_answers_without_torch(tmp_path):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "entry.train", "--epochs", "4", "--print_config"],
                            cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epochs: 4\n" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "lightning")}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_entry_trains_from_a_config_file(tmp_path, tiny_channels):
    """The SageMaker form and the file form together: strings for every value, the file underneath."""
    (tmp_path / "run.yaml").write_text(
        f"train: {tiny_channels['train']}\nval: {tiny_channels['val']}\nhidden_sizes: [4]\nepochs: 1000\n")
    work = tmp_path / "work"
    work.mkdir()
    result = run_entry("train", "--config", str(tmp_path / "run.yaml"), "--fast_dev_run", "true", "--batch_size", "8",
                       cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fast_dev_run: the whole entry ran on a few batches; nothing was saved" in result.stderr
    assert list(work.iterdir()) == []  # the file's channels were used: no ./data prepared, nothing saved

"""Flag values the entries refuse before any work (non-finite, out of range, absurd sizes), the
`--strategy` factory, `--debug`'s spellings and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from tests.helpers import clean_env, run_entry
from titanic_lightning import cli, config
from titanic_lightning.command import debug_requested, run_command
from titanic_lightning.config import parse_train_args
from titanic_lightning.errors import UsageError

REFUSED = [
    ("--learning_rate", "inf"), ("--learning_rate", "1e400"), ("--learning_rate", "nan"), ("--learning_rate", "-inf"),
    ("--learning_rate", "Infinity"), ("--weight_decay", "inf"), ("--weight_decay", "nan"), ("--weight_decay", "1e999"),
    ("--dropout", "nan"), ("--dropout", "inf"),
    ("--checkpoint_every_n_seconds", "inf"), ("--checkpoint_every_n_seconds", "nan"),
    ("--checkpoint_every_n_seconds", "1e400"), ("--checkpoint_every_n_seconds", "1e300"),
    ("--checkpoint_every_n_seconds", str(config.LONGEST_JOB_S + 1)),
    ("--process_group_timeout", str(10**30)), ("--process_group_timeout", str(config.LONGEST_JOB_S + 1)),
    ("--seed", "-1"), ("--seed", str(2**32)), ("--seed", str(10**30)),
    ("--hidden_sizes", f"[{10**12}]"), ("--hidden_sizes", f"[64, {config.MAX_HIDDEN_WIDTH + 1}]"),
    ("--hidden_sizes", "[0]"), ("--hidden_sizes", str([8] * (config.MAX_HIDDEN_LAYERS + 1))),
]


@pytest.mark.parametrize("flag, value", REFUSED)
def test_out_of_range_values_are_refused_naming_the_flag(flag, value):
    with pytest.raises(UsageError, match=f"^{flag}:"):
        parse_train_args([f"{flag}={value}"])


@pytest.mark.parametrize("flag, value", [
    ("--seed", "0"), ("--seed", str(2**32 - 1)), ("--learning_rate", "3.4e38"), ("--weight_decay", "0"),
    ("--checkpoint_every_n_seconds", str(config.LONGEST_JOB_S)), ("--process_group_timeout", str(config.LONGEST_JOB_S)),
    ("--hidden_sizes", str([config.MAX_HIDDEN_WIDTH] * config.MAX_HIDDEN_LAYERS)),
    # Enormous counts are legitimate: full batch, and epochs bounded by early stopping.
    ("--batch_size", str(10**30)), ("--epochs", str(10**30)), ("--patience", str(10**30)),
])
def test_values_at_the_bounds_are_accepted(flag, value):
    cfg = parse_train_args([flag, value])
    parsed = getattr(cfg, flag[2:])
    assert parsed == (json.loads(value) if value.startswith("[") else type(parsed)(value))


def test_help_documents_the_bounds():
    text = cli.parser(config.TrainConfig, "python -m entry.train").format_help()
    for phrase in ("FinitePositiveFloat", "0 to 2**32-1", "at most 16 layers, each 1 to 4096 wide", "at most 28 days"):
        assert phrase in " ".join(text.split()), phrase


def test_the_entry_refuses_a_non_finite_learning_rate_before_any_work(tmp_path, tiny_channels):
    result = run_entry("train", "--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"]),
                       "--model_dir", "model", "--output_dir", "out", "--learning_rate", "1e400", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --learning_rate: Not of type FinitePositiveFloat: 1e400 does not conform to restriction "
        "v>0.0 and v<=3.4028234663852886e+38"]
    assert not (tmp_path / "model").exists() and not (tmp_path / "out").exists()


def test_a_batch_size_beyond_int64_trains_full_batch():
    from titanic_lightning.data.datamodule import ShardedBatchSampler

    sampler = ShardedBatchSampler(10, 10**30, shuffle=True, seed=0)
    assert len(sampler) == 1 and [len(b) for b in sampler] == [10]


# --- --strategy package.module:factory --------------------------------------------------------------

FACTORIES = '''
from lightning.pytorch.strategies import SingleDeviceStrategy
def no_arguments():
    return SingleDeviceStrategy("cpu")
def raises_type_error(plan):
    raise TypeError("unsupported plan")
def returns_a_name(plan):
    return "ddp"
def returns_the_class(plan):
    return SingleDeviceStrategy
def good(plan):
    return SingleDeviceStrategy("cpu")
'''


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "my_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name, expected", [
    ("no_arguments", "the factory must take one argument, the plan"),
    ("raises_type_error", "the factory raised TypeError: unsupported plan"),
    ("returns_a_name", "the factory returned str, not a Lightning Strategy"),
    ("returns_the_class", "not a Lightning Strategy"),
])
def test_a_factory_that_yields_no_strategy_is_a_usage_error(name, expected, factories):
    from titanic_lightning.training.cluster import make_plan
    from titanic_lightning.training.strategies import build_strategy

    plan = make_plan(0, strategy=f"my_factories:{name}")
    with pytest.raises(UsageError, match=f"^--strategy my_factories:{name}: .*{expected}"):
        build_strategy(plan)


def test_a_good_factory_is_used(factories):
    from lightning.pytorch.strategies import SingleDeviceStrategy

    from titanic_lightning.training.cluster import make_plan
    from titanic_lightning.training.strategies import build_strategy

    assert isinstance(build_strategy(make_plan(0, strategy="my_factories:good")), SingleDeviceStrategy)


def test_the_entry_ends_a_bad_factory_in_one_line(factories, tmp_path, tiny_channels):
    env = clean_env()
    env["PYTHONPATH"] += f":{factories}"
    result = run_entry("train", "--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"]),
                       "--model_dir", "model", "--output_dir", "out", "--strategy", "my_factories:no_arguments",
                       cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [result.stderr.strip().splitlines()[-1]] and "Traceback" not in result.stderr
    assert errors[0].startswith("error: --strategy my_factories:no_arguments: the factory must take one argument")
    assert not (tmp_path / "model").exists()


# --- --debug and Ctrl-C -----------------------------------------------------------------------------


@pytest.mark.parametrize("args, on", [
    (["--debug", "true"], True), (["--debug=True"], True), (["--debug", "yes"], True), (["--debug=YES"], True),
    (["--debug", "on"], True), (["--debug"], True), (["--debug", "--epochs", "3"], True),
    (["--debug", "false"], False), (["--debug=no"], False), (["--debug", "Off"], False),
    (["--debug", "1"], False), (["--debug", "true", "--debug", "false"], False), ([], False),
])
def test_debug_is_read_like_every_boolean_flag(args, on):
    assert debug_requested(args) is on
    entry_args = [a for a in args if a != "--epochs" and a != "3"]
    if entry_args and entry_args != ["--debug"]:  # the entry's parser reads the same value the same way
        try:
            assert parse_train_args(entry_args).debug is on
        except UsageError:
            assert not on


def test_debug_yes_shows_the_traceback():
    def fails(argv):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_command(fails, ["--debug", "yes"])
    with pytest.raises(SystemExit) as exc:
        run_command(fails, ["--debug", "no"])
    assert exc.value.code == 1


@pytest.mark.parametrize("size", [100_000, 10])  # written before the command ends, or flushed as it ends
def test_stdout_whose_reader_has_gone_ends_the_command_quietly(size, monkeypatch, capsys):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `... | head` after head has exited
    with open(write_end, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)

        def writes(argv):
            print("x" * size)

        with pytest.raises(SystemExit) as exc:
            run_command(writes, [])
        monkeypatch.undo()
    assert exc.value.code == 141
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_stdout_is_a_failure(monkeypatch, capsys):
    read_end, write_end = os.pipe()
    with open(read_end, "rb"), open(write_end, "w") as pipe:  # stdout's reader is still there
        monkeypatch.setattr(sys, "stdout", pipe)

        def fails(argv):
            raise BrokenPipeError(32, "Broken pipe")

        with pytest.raises(SystemExit) as exc:
            run_command(fails, [])
        monkeypatch.undo()
    assert exc.value.code == 1
    assert capsys.readouterr().err.startswith("error: BrokenPipeError: [Errno 32] Broken pipe")


def test_lightnings_exit_after_ctrl_c_is_exit_130(capsys):
    def interrupted_inside_lightning(argv):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning's _call_and_handle_interrupt does

    with pytest.raises(SystemExit) as exc:
        run_command(interrupted_inside_lightning, [])
    assert exc.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_ctrl_c_during_fit_is_noted_and_raised_at_the_next_batch_start():
    from titanic_lightning.command import interrupt_noted, stops_deferred
    from titanic_lightning.training.callbacks import StopWhenNoted

    class Trainer:
        world_size, received_sigterm = 1, False

    before = signal.getsignal(signal.SIGINT)
    with stops_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # wherever it lands, nothing is raised there
        assert interrupt_noted()
        with pytest.raises(KeyboardInterrupt):
            StopWhenNoted().on_train_batch_start(Trainer(), None, None, 0)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert not interrupt_noted() and signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("delay_s", [0, 0.02, 0.05, 0.1, 0.2])
def test_ctrl_c_during_training_ends_with_one_line_and_exit_130(delay_s, tmp_path, tiny_channels):
    # Ctrl-C at several moments of an epoch: raised where it landed, it could stall the shutdown
    # inside TensorBoard's writer for two minutes.
    import time

    from launch.jobs.warm import WarmProcess

    args = ["--train", str(tiny_channels["train"]), "--val", str(tiny_channels["val"]), "--model_dir", "model",
            "--output_dir", "out", "--epochs", "100000", "--early_stopping", "false"]
    process = WarmProcess("entry.train", args, cwd=tmp_path, env=clean_env(), stderr_apart=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch="):
                break
        time.sleep(delay_s)
        os.kill(process.pid, signal.SIGINT)
        code = process.wait(timeout=20)
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert code == 130, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == ["error: interrupted"]
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err

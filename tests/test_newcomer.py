"""The README's first steps as a newcomer takes them: its commands exactly as written, the launcher
from the training set-up (no launch extra), Lightning's `--fast_dev_run` through the real entry in
each environment, and a log that holds only the project's lines and real warnings."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launch.jobs.container import free_port
from tests.helpers import REPO, clean_env, run_entry, write_channel

README = (REPO / "README.md").read_text()
NOISE = ("litlogger", "LeafSpec")


def readme_command(prefix: str) -> list[str]:
    """The one README line (in an indented code block) that starts with `prefix`, as argv."""
    lines = [line.strip() for line in README.splitlines() if line.startswith("    ") and line.strip().startswith(prefix)]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].split("#")[0])


@pytest.mark.slow
def test_the_lessons_command_runs_as_the_readme_writes_it(tmp_path, prepared):
    argv = readme_command("python -m entry.train --train")
    assert argv[3:] == ["--train", "data/train_data.npz", "--val", "data/val_data.npz", "--epochs", "1000",
                        "--learning_rate", "0.001"]
    shutil.copytree(prepared, tmp_path / "data")  # what `make train` leaves in the repository root
    result = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=clean_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final: " in result.stdout and (tmp_path / "model" / "model.pt").is_file()
    assert not [word for word in NOISE if word in result.stderr], result.stderr


def _without_launch_extra(args: list[str], cwd: Path, script: str = "submit.py",
                          missing: tuple[str, ...] = ("sagemaker", "boto3", "botocore")) -> subprocess.CompletedProcess:
    """`python launch/<script> args` where the `missing` packages cannot be imported."""
    code = ("import runpy, sys\n"
            f"for name in {missing!r}:\n"
            "    sys.modules[name] = None  # import fails as if the package were not installed\n"
            f"sys.argv = {[str(REPO / 'launch' / script), *args]!r}\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args", [["--dry-run"], ["--local", "--hp", "epochs=2"], []])
def test_launcher_without_the_launch_extra_says_how_to_install_it(args, tmp_path):
    result = _without_launch_extra(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: this launcher command needs the `launch` extra (sagemaker is not installed): "
        "run `make dev`, or `.venv/bin/python -m pip install -e '.[launch]'`"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("script", "args", "missing", "package"), [
    ("tune.py", ["--local", "--trials", "1"], ("optuna",), "optuna"),
    ("tune.py", ["--dry-run"], ("sagemaker", "boto3", "botocore"), "sagemaker"),
    ("deploy.py", ["--model", "s3://bucket-x/k/model.tar.gz", "--role", "arn:aws:iam::123456789012:role/x"],
     ("sagemaker", "boto3", "botocore"), "boto3"),
])
def test_every_launcher_command_without_the_launch_extra_says_how_to_install_it(script, args, missing, package, tmp_path):
    result = _without_launch_extra(args, tmp_path, script, missing)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: this launcher command needs the `launch` extra ({package} is not installed): "
        "run `make dev`, or `.venv/bin/python -m pip install -e '.[launch]'`"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "expected"), [
    (["--epochs", "5"], "error: unrecognized arguments: --epochs 5 (see python launch/submit.py --help)"),
    (["--instance-count", "two"], "error: argument --instance-count: 'two' is not an integer"),
    (["--compare", "runs/none.json"], "error: --compare runs/none.json: no such file"),
])
def test_launcher_usage_mistakes_are_reported_as_such_whatever_is_installed(args, expected, tmp_path):
    result = _without_launch_extra(args, tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith(expected), result.stderr


def test_launcher_debug_shows_the_traceback(tmp_path):
    plain = _without_launch_extra(["--dry-run"], tmp_path)
    debug = _without_launch_extra(["--dry-run", "--debug"], tmp_path)
    assert "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "ModuleNotFoundError" in debug.stderr and debug.returncode == 1


# --- --fast_dev_run through the real entry ------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path) -> dict[str, Path]:
    return {split: write_channel(tmp_path / "channels" / split / f"{split}_data.npz", split, rows=rows, seed=i)
            for i, (split, rows) in enumerate((("train", 48), ("val", 24), ("test", 24)))}


def _fast_dev_run_checks(result: subprocess.CompletedProcess, cwd: Path, world_size: int, launcher: str) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    processes = re.findall(r"process: world_size=(\d+);.*launcher=(\w+);", result.stderr)
    assert processes and all(p == (str(world_size), launcher) for p in processes), result.stderr
    assert result.stdout.count("final: ") == 1 and "test_acc=" in result.stdout
    assert "fast_dev_run: the whole entry ran on a few batches; nothing was saved" in result.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["channels"], "fast_dev_run writes nothing"
    assert not [word for word in NOISE if word in result.stderr], result.stderr


def test_fast_dev_run_plain_process(tiny, tmp_path):
    result = run_entry("train", "--fast_dev_run", "true", "--train", str(tiny["train"]), "--val", str(tiny["val"]),
                       "--test", str(tiny["test"]), "--checkpoint_dir", "ckpt", cwd=tmp_path)
    _fast_dev_run_checks(result, tmp_path, 1, "local")


@pytest.mark.slow
def test_fast_dev_run_under_torchrun(tiny, tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "-m", "entry.train", "--fast_dev_run", "2", "--train", str(tiny["train"]), "--val", str(tiny["val"]),
            "--test", str(tiny["test"])]
    result = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    _fast_dev_run_checks(result, tmp_path, 2, "torchrun")


@pytest.mark.slow
def test_fast_dev_run_on_a_sagemaker_host(tiny, tmp_path):
    env = clean_env(SM_HOSTS='["algo-1"]', SM_CURRENT_HOST="algo-1", SM_NUM_GPUS="0",
                    SM_MASTER_ADDR="127.0.0.1", SM_MASTER_PORT=str(free_port()),
                    SM_MODEL_DIR=str(tmp_path / "opt-model"), SM_OUTPUT_DATA_DIR=str(tmp_path / "opt-output"),
                    **{f"SM_CHANNEL_{split.upper()}": str(path.parent) for split, path in tiny.items()})
    result = run_entry("train", "--fast_dev_run", "true", "--cpu_processes", "2", cwd=tmp_path, env=env)
    _fast_dev_run_checks(result, tmp_path, 2, "sagemaker")

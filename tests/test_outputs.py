"""Output paths: a command writes only files of its own names, replaces only files it wrote, checks
every output path before any work, writes inside the target folder (so a folder that is its own
mount point works), and leaves nothing half-written when it is killed.

Each case snapshots the whole tree it runs in and compares it afterwards: a user's file that is
deleted, moved, renamed or changed fails the test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch  # noqa: F401 - Lightning's logger must bind the session's stderr, not a test's
import numpy as np
import pytest
import torch

import entry.export
import entry.predict
import entry.prepare
import entry.train
from tests import helpers
from tests.helpers import REPO, clean_env, write_channel
from titanic_lightning.io import artifacts, outputs
from titanic_lightning.io.atomic import PARTIAL_MARK, partial_path, remove_stale_partials, write_text

COMMANDS = {"prepare": entry.prepare.main, "train": entry.train.main, "predict": entry.predict.main,
            "export": entry.export.main}
FOREIGN_ENV = ("SM_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_", "NODE_RANK",
               "TORCHELASTIC", "TITANIC_CHECKPOINT_DIR")
TRAIN_FAST = ["--epochs", "2", "--hidden_sizes", "[8]", "--batch_size", "64"]


@pytest.fixture(autouse=True)
def _no_job_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith(FOREIGN_ENV):
            monkeypatch.delenv(key)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (bytes), folder (None) and symbolic link (its target) under `root`, by relative path."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = b"symlink to " + os.readlink(path).encode()
        else:
            out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def assert_kept(before: dict, root: Path) -> None:
    """Every file and folder of `before` is still there, unchanged."""
    after = snapshot(root)
    lost = sorted(k for k in before if k not in after)
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert not lost and not changed, f"lost {lost}, changed {changed}"


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".partial")]


def invoke(command: str, argv: list[str], capsys) -> tuple[int, str, str]:
    return helpers.invoke(COMMANDS[command], argv, capsys)


def assert_usage_error(code: int, err: str, *names: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len([line for line in lines if line.startswith("error")]) == 1 and lines[-1].startswith("error: "), err
    for name in names:
        assert name in lines[-1], f"{name!r} not in {lines[-1]!r}"
    return lines[-1]


def user_files(folder: Path) -> None:
    """A user's own files, inside and beside `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("the user's notes\n")
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / "table.csv").write_text("a,b\n1,2\n")
    (folder.parent / f"beside-{folder.name}.txt").write_text("beside\n")


def model_pairs(model_dir: Path) -> dict:
    """metrics.json equals the metrics inside the model.pt beside it; return them."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert torch.load(model_dir / "model.pt", weights_only=True)["metrics"] == metrics
    return metrics


@pytest.fixture
def channels(tmp_path) -> Path:
    """Tiny synthetic channels in tmp_path/data (no preprocessing.json: features are made up)."""
    data = tmp_path / "data"
    for i, (split, rows) in enumerate((("train", 48), ("val", 24))):
        write_channel(data / f"{split}_data.npz", split, rows=rows, seed=i)
    return data


def channel_flags(data: Path) -> list[str]:
    return ["--train", str(data / "train_data.npz"), "--val", str(data / "val_data.npz")]


# --- the model and output folders keep everything they did not write --------------------------------


@pytest.mark.parametrize("where", ["working directory as both", "folders with other files", "data folder",
                                   "one folder for model and logs"])
def test_training_keeps_every_file_it_did_not_write(where, tmp_path, channels, monkeypatch, capsys):
    work = tmp_path / "work"
    user_files(work)
    (work / "data").mkdir()
    for name in ("train_data.npz", "val_data.npz"):
        shutil.copy(channels / name, work / "data" / name)
    flags = {
        "working directory as both": ["--model_dir", ".", "--output_dir", "."],
        "folders with other files": ["--model_dir", "model", "--output_dir", "outputs"],
        "data folder": ["--model_dir", "data", "--output_dir", "data"],
        "one folder for model and logs": ["--model_dir", "results", "--output_dir", "results"],
    }[where]
    if where == "folders with other files":
        user_files(work / "model")
        user_files(work / "outputs")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    code, _, err = invoke("train", [*channel_flags(work / "data"), *TRAIN_FAST, *flags], capsys)
    assert code == 0, err
    assert_kept(before, tmp_path)
    model_dir, output_dir = Path(flags[1]), Path(flags[3])
    assert model_pairs(model_dir)["epochs_run"] == 2
    assert (model_dir / "code" / "inference.py").is_file()
    assert (output_dir / "curves.png").is_file() and (output_dir / "csv" / "metrics.csv").is_file()
    assert not partials(tmp_path)


def test_the_same_command_twice_replaces_its_own_files(tmp_path, channels, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path / "model")
    for epochs in ("2", "3"):
        code, _, err = invoke("train", [*channel_flags(channels), "--epochs", epochs, "--hidden_sizes", "[8]"], capsys)
        assert code == 0, err
        assert model_pairs(tmp_path / "model")["epochs_run"] == int(epochs)
    assert (tmp_path / "model" / "notes.txt").read_text() == "the user's notes\n"
    assert "epoch" in (tmp_path / "outputs" / "csv" / "metrics.csv").read_text()


FOREIGN = {
    # an output file name holding something this project did not write: (folder flag, path, content).
    # Some look like this project's files on purpose: only the folder's record vouches for a file.
    "model.pt": ("--model_dir", "model/model.pt", b"my own weights"),
    "metrics.json": ("--model_dir", "model/metrics.json", b'{"accuracy": 0.9}'),
    "metrics.json with this project's keys": ("--model_dir", "model/metrics.json",
                                              b'{"best_epoch": 3, "epochs_run": 10, "note": "my own run"}'),
    "code/inference.py naming the project": ("--model_dir", "model/code/inference.py",
                                             b"# My handler for titanic-lightning models, keep\n"),
    "a module in code/titanic_lightning": ("--model_dir", "model/code/titanic_lightning/serving/scoring.py", b"# mine\n"),
    "code is a file": ("--model_dir", "model/code", b"not a folder"),
    "code/inference.py": ("--model_dir", "model/code/inference.py", b"def model_fn(d): ...\n"),
    "code/requirements.txt": ("--model_dir", "model/code/requirements.txt", b"scipy\n"),
    "curves.png": ("--output_dir", "outputs/curves.png", b"\x89PNG\r\n\x1a\nsomeone else's"),
    "csv/metrics.csv": ("--output_dir", "outputs/csv/metrics.csv", b"a,b\n1,2\n"),
    "another Lightning run's csv/metrics.csv": ("--output_dir", "outputs/csv/metrics.csv", b"epoch,step,loss\n0,9,0.1\n"),
    "csv/hparams.yaml": ("--output_dir", "outputs/csv/hparams.yaml", b"hidden_sizes: [512]\n"),
    "a forged record": ("--model_dir", "model/.titanic-lightning-files", b'{"files": {"metrics.json": ["*"]}}'),
    "csv is a file": ("--output_dir", "outputs/csv", b"plain"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_foreign_file_of_an_output_name_stops_training_before_it_starts(case, tmp_path, channels, monkeypatch,
                                                                           capsys):
    flag, rel, content = FOREIGN[case]
    target = tmp_path / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, out, err = invoke("train", [*channel_flags(channels), *TRAIN_FAST], capsys)
    assert_usage_error(code, err, flag, rel)
    assert "epoch=" not in out
    assert snapshot(tmp_path) == before


def test_prepare_keeps_other_files_and_refuses_foreign_channels(tmp_path, titanic_csv, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path / "data")
    before = snapshot(tmp_path)
    code, _, err = invoke("prepare", ["--csv", str(titanic_csv), "--out", "data"], capsys)
    assert code == 0, err
    assert_kept(before, tmp_path)
    code, _, err = invoke("prepare", ["--csv", str(titanic_csv), "--out", "data"], capsys)  # its own files: replaced
    assert code == 0, err
    # The lesson's own npz files, and Kaggle's CSV under the name of the held-out rows, are the user's.
    lesson = tmp_path / "lesson"
    write_channel(lesson / "val_data.npz", "val")
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    shutil.copy(titanic_csv, kaggle / "test_passengers.csv")
    for folder, name in ((lesson, "val_data.npz"), (kaggle, "test_passengers.csv")):
        before = snapshot(tmp_path)
        code, _, err = invoke("prepare", ["--csv", str(titanic_csv), "--out", folder.name], capsys)
        assert_usage_error(code, err, f"--out {folder.name}", f"{folder.name}/{name}", "not written by titanic-lightning")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("flag", "rel"), [("--model_dir model", "model/code/titanic_lightning/serving/scoring.py"),
                                           ("--output_dir outputs", "outputs/csv/metrics.csv"),
                                           ("--output_dir outputs", "outputs/csv/hparams.yaml")])
def test_a_file_edited_since_the_run_wrote_it_is_the_users(flag, rel, tmp_path, channels, monkeypatch, capsys):
    # Lightning's logs too: claimed while Lightning writes them, then recorded byte for byte.
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("train", [*channel_flags(channels), *TRAIN_FAST], capsys)
    assert code == 0, err
    edited = tmp_path / rel
    edited.write_text(edited.read_text() + "# the user's note\n")
    before = snapshot(tmp_path)
    code, out, err = invoke("train", [*channel_flags(channels), *TRAIN_FAST], capsys)
    assert_usage_error(code, err, flag, rel, "changed since")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("out", "rel", "owner"), [("model/metrics.json", "model/metrics.json", "entry.train"),
                                                   ("pdata/train_data.npz", "pdata/train_data.npz", "entry.prepare")])
def test_predict_never_replaces_a_file_another_command_wrote(out, rel, owner, tmp_path, prepared, titanic_csv, channels,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command, argv in (("prepare", ["--csv", str(titanic_csv), "--out", "pdata"]),
                          ("train", [*channel_flags(channels), *TRAIN_FAST])):
        code, _, err = invoke(command, argv, capsys)
        assert code == 0, err
    before = snapshot(tmp_path)
    code, _, err = invoke("predict", ["--model", "model", "--csv", str(prepared / "test_passengers.csv"), "--out", out],
                          capsys)
    assert_usage_error(code, err, f"--out {rel}", f"was written by python -m {owner}, which owns it")
    assert "not written by" not in err
    assert snapshot(tmp_path) == before


def test_a_record_nested_too_deeply_is_refused_in_one_line(tmp_path, titanic_csv, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".titanic-lightning-files").write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("prepare", ["--csv", str(titanic_csv), "--out", "data"], capsys)
    assert_usage_error(code, err, "--out data", "is not titanic-lightning's record of its files")


# --- every output path is checked before any work ----------------------------------------------------


def _existing_file(root: Path) -> str:
    (root / "a-file").write_text("the user's file\n")
    return "a-file"


PATH_CASES = {
    # case: (command, argv builder(root, model_dir, csv) -> argv, words of the error)
    "train --model_dir is a file": ("train", lambda r, m, c, d: [*d, "--model_dir", _existing_file(r)],
                                    ["--model_dir a-file", "not a folder"]),
    "train --model_dir under a file": ("train", lambda r, m, c, d: [*d, "--model_dir", _existing_file(r) + "/m"],
                                       ["--model_dir a-file/m", "is a file"]),
    "train --output_dir is a file": ("train", lambda r, m, c, d: [*d, "--output_dir", _existing_file(r)],
                                     ["--output_dir a-file", "not a folder"]),
    "train --checkpoint_dir is a file": ("train", lambda r, m, c, d: [*d, "--checkpoint_dir", _existing_file(r)],
                                         ["--checkpoint_dir a-file", "not a folder"]),
    "prepare --out is a file": ("prepare", lambda r, m, c, d: ["--csv", c, "--out", _existing_file(r)],
                                ["--out a-file", "not a folder"]),
    "prepare --out would overwrite --csv": (
        "prepare", lambda r, m, c, d: ["--csv", _copy(c, r / "out" / "test_passengers.csv"), "--out", "out"],
        ["--out out", "--csv out/test_passengers.csv"]),
    "predict --out is a folder": ("predict", lambda r, m, c, d: ["--model", m, "--csv", c, "--out", "."],
                                  ["--out .", "folder"]),
    "predict --out is --csv": ("predict", lambda r, m, c, d: ["--model", m, "--csv", _copy(c, r / "p.csv"),
                                                              "--out", "p.csv"], ["--out p.csv", "--csv p.csv"]),
    "predict --out in a missing folder": ("predict", lambda r, m, c, d: ["--model", m, "--csv", c, "--out", "no/p.csv"],
                                          ["--out no/p.csv", "does not exist"]),
    "predict --out is the user's file": ("predict", lambda r, m, c, d: ["--model", m, "--csv", c, "--out",
                                                                        _existing_file(r)],
                                         ["--out a-file", "not written by titanic-lightning"]),
    "predict --out is the user's file that looks like predictions": (
        "predict", lambda r, m, c, d: ["--model", m, "--csv", c, "--out",
                                       _write(r / "p.csv", "PassengerId,probability,prediction\n")],
        ["--out p.csv", "not written by titanic-lightning"]),
    "train --model_dir is a dangling link": ("train", lambda r, m, c, d: [*d, "--model_dir", _dangling(r, "mdl")],
                                             ["--model_dir mdl", "symbolic link to nothing"]),
    "train --output_dir is a dangling link": ("train", lambda r, m, c, d: [*d, "--output_dir", _dangling(r, "out")],
                                              ["--output_dir out", "symbolic link to nothing"]),
    "train last.ckpt is a folder": ("train", lambda r, m, c, d: [*d, "--checkpoint_dir", _mkdir(r / "ck" / "last.ckpt", "ck")],
                                    ["--checkpoint_dir ck", "ck/last.ckpt is not a regular file"]),
    "train last.ckpt is a dangling link": ("train", lambda r, m, c, d: [*d, "--checkpoint_dir", _dangling(r, "ck/last.ckpt", "ck")],
                                           ["--checkpoint_dir ck", "ck/last.ckpt is not a regular file"]),
    "export --out is the model": ("export", lambda r, m, c, d: ["--model", m, "--out", f"{m}/model.pt"],
                                  ["--out", "model.pt", "same file as --model"]),
    "export --out is a folder": ("export", lambda r, m, c, d: ["--model", m, "--out", "."], ["--out .", "folder"]),
}


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return path.name


def _dangling(root: Path, name: str, shown: str | None = None) -> str:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).symlink_to(root / "gone")
    return shown or name


def _mkdir(path: Path, shown: str) -> str:
    path.mkdir(parents=True)
    return shown


def _copy(source: str, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return str(target.relative_to(Path.cwd()))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, prepared) -> Path:
    from tests.trained_model import trained_model_dir

    return trained_model_dir(tmp_path_factory, prepared)


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_output_paths_are_checked_before_any_work(case, tmp_path, small_model, prepared, channels, monkeypatch,
                                                  capsys):
    command, build, words = PATH_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    model = shutil.copytree(small_model, work / "model")
    argv = build(work, str(model.relative_to(work)), str(prepared / "test_passengers.csv"), channel_flags(channels))
    before = snapshot(tmp_path)
    code, out, err = invoke(command, argv, capsys)
    assert_usage_error(code, err, *words)
    assert out == ""
    assert snapshot(tmp_path) == before


# --- mounts: SageMaker's separate volumes, and folders that cannot be written --------------------------

needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs root and unshare(1) for a private mount namespace")


def in_mount_namespace(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (its mounts vanish with it)."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script], cwd=cwd,
                          env=clean_env(PY=sys.executable), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@needs_unshare
def test_model_output_and_checkpoint_folders_that_are_mount_points(tmp_path, channels):
    # As SageMaker's local container mode mounts /opt/ml/model, /opt/ml/output and /opt/ml/checkpoints.
    for name in ("model", "output", "checkpoints"):
        (tmp_path / "opt" / name).mkdir(parents=True)
    script = f"""
for d in model output checkpoints; do mount -t tmpfs tmpfs opt/$d; done
echo mine > opt/model/notes.txt
"$PY" -m entry.train {' '.join(channel_flags(channels))} {' '.join(TRAIN_FAST)} --model_dir opt/model \\
    --output_dir opt/output --checkpoint_dir opt/checkpoints
"$PY" -c 'import json, torch; m = json.load(open("opt/model/metrics.json"));
assert torch.load("opt/model/model.pt", weights_only=True)["metrics"] == m; print("paired", m["epochs_run"])'
cat opt/model/notes.txt; ls opt/output opt/checkpoints
"""
    result = in_mount_namespace(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split()
    assert "paired" in lines and "mine" in lines and "curves.png" in lines and "last.ckpt" in lines


@needs_unshare
@pytest.mark.parametrize(("command", "args", "flag"), [
    ("entry.train", "--model_dir ro/model", "--model_dir ro/model"),
    ("entry.train", "--output_dir ro", "--output_dir ro"),
    ("entry.train", "--checkpoint_dir ro/ckpt", "--checkpoint_dir ro/ckpt"),
    ("entry.prepare", "--out ro/data", "--out ro/data"),
    ("launch/submit.py", "--local --jobs-dir ro/jobs", "--jobs-dir ro/jobs"),
    ("launch/submit.py", "--runs-dir ro/runs", "--runs-dir ro/runs"),
])
def test_folders_that_cannot_be_written_are_refused_first(command, args, flag, tmp_path, channels, titanic_csv):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "notes.txt").write_text("mine\n")
    runner = f'"$PY" {command}' if command.endswith(".py") else f'"$PY" -m {command}'
    command_line = f"{runner} {args}"
    if command == "entry.train":
        command_line += " " + " ".join(channel_flags(channels) + TRAIN_FAST)
    if command == "entry.prepare":
        command_line += f" --csv {titanic_csv}"
    script = f"""
mount --bind ro ro && mount -o remount,bind,ro ro
cd "{tmp_path / 'cwd'}"
set +e
{command_line.replace(' ro', ' ../ro')}
echo "exit=$?"
"""
    (tmp_path / "cwd").mkdir()
    before = snapshot(tmp_path)
    if command.startswith("launch"):
        script = script.replace('"$PY" launch/', f'"$PY" {REPO}/launch/')
    result = in_mount_namespace(script, tmp_path)
    assert "exit=2" in result.stdout, result.stdout + result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {flag.replace(' ro', ' ../ro')}") and "Read-only file system" in error, error
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


# --- the model directory's files are written as a set -------------------------------------------------


def _payload(tag: float) -> tuple[dict, dict]:
    return {"state_dict": {"w": torch.full((2,), tag)}, "hyperparameters": {}, "preprocessing": None}, \
        {"epochs_run": 1, "best_epoch": 1, "tag": tag}


@pytest.mark.parametrize("fail_at", ["model.pt", "code/", "metrics.json"])
def test_a_write_that_fails_part_way_never_pairs_files_of_two_runs(fail_at, tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    artifacts.write_model_dir(model_dir, *_payload(1.0))

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    real_write_text = outputs.Writer.write_text

    def boom_on_metrics(self, name, text):
        return boom() if name == "metrics.json" else real_write_text(self, name, text)

    target = {"model.pt": "torch.save", "code/": "titanic_lightning.serving.write_serving_code",
              "metrics.json": "titanic_lightning.io.outputs.Writer.write_text"}[fail_at]
    monkeypatch.setattr(target, boom_on_metrics if fail_at == "metrics.json" else boom)
    with pytest.raises(OSError):
        artifacts.write_model_dir(model_dir, *_payload(2.0))
    monkeypatch.undo()
    if (model_dir / "metrics.json").exists():
        model_pairs(model_dir)
    else:
        assert fail_at != "model.pt" or torch.load(model_dir / "model.pt", weights_only=True)["metrics"]["tag"] == 1.0
    assert not partials(tmp_path)
    artifacts.write_model_dir(model_dir, *_payload(3.0))
    assert model_pairs(model_dir)["tag"] == 3.0


# --- killed while preparing: nothing half-written is left ---------------------------------------------


def left_partial(path: Path, data: str = "cut short") -> Path:
    """A partial file as a killed writer of this project leaves it: our form and our mark."""
    path.write_text(data)
    os.setxattr(path, PARTIAL_MARK, b"partial")
    return path


def test_a_partial_file_is_removed_only_when_its_writer_is_gone_and_it_is_ours(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = left_partial(tmp_path / f".train_data.npz.{gone.pid}-0123abcd.partial")
    alive = left_partial(tmp_path / f".train_data.npz.{os.getppid()}-0123abcd.partial")  # a running process's
    look_alike = tmp_path / ".notes.txt.partial"  # not of our form: the user's
    look_alike.write_text("x")
    users = tmp_path / f".notes.txt.{gone.pid}-0123abcd.partial"  # our form, but the user's file: no mark
    users.write_text("x")
    folder = tmp_path / f".model.pt.{gone.pid}-0123abcd.partial"  # our form, a folder
    folder.mkdir()
    assert remove_stale_partials(tmp_path) == [dead]
    assert alive.exists() and look_alike.exists() and users.exists() and folder.is_dir() and not dead.exists()
    assert partial_path(tmp_path / "model.pt").name.startswith(f".model.pt.{os.getpid()}-")


def test_a_finished_file_carries_no_partial_mark(tmp_path):
    write_text(tmp_path / "a.txt", "done")
    with pytest.raises(OSError):
        os.getxattr(tmp_path / "a.txt", PARTIAL_MARK)


def test_a_partial_file_is_marked_from_its_first_name_and_a_kill_after_the_rename_leaves_none(tmp_path, monkeypatch):
    from titanic_lightning.io import atomic

    links = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda *a, **k: (links.append(a), real_link(*a, **k))[1])
    with atomic.atomic_output(tmp_path / "a.txt") as tmp:
        # Linked in from an unnamed file that was marked first (O_TMPFILE): never named unmarked.
        assert links and links[0][0].startswith("/proc/self/fd/")
        assert os.getxattr(tmp, PARTIAL_MARK) == b"partial" and tmp.stat().st_size == 0
        assert tmp.stat().st_mode & 0o777 == 0o666 & ~_umask()
        tmp.write_text("done")

    # The mark comes off after the rename: a writer killed in between leaves the whole target (with
    # a stray mark), never an unmarked partial file that no later run would remove.
    seen = []

    def killed(path, *args, **kwargs):
        seen.append((Path(path), sorted(p.name for p in tmp_path.iterdir())))
        raise SystemExit(137)

    monkeypatch.setattr(os, "removexattr", killed)
    with pytest.raises(SystemExit), atomic.atomic_output(tmp_path / "b.txt") as tmp:
        tmp.write_text("whole")
    assert seen == [(tmp_path / "b.txt", ["a.txt", "b.txt"])]
    assert (tmp_path / "b.txt").read_text() == "whole"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_prepare_killed_at_any_moment_leaves_nothing_half_written(sig, tmp_path, titanic_csv):
    env = clean_env(TITANIC_CSV=str(titanic_csv))
    out = tmp_path / "data"
    user_files(out)
    command = [sys.executable, "-m", "entry.prepare", "--out", str(out)]
    reference = None
    for delay in (0.6, 1.2, 1.8, 2.4):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(sig)
        proc.wait()
        files = {p.name for p in out.iterdir()}
        assert not [p for p in out.iterdir() if p.is_dir() and p.name.startswith(".")]  # no staging folder
        if "preprocessing.json" in files:  # the channels beside it are whole and the ones it describes
            description = json.loads((out / "preprocessing.json").read_text())
            with np.load(out / "train_data.npz") as npz:
                assert len(npz["y_train"]) == description["rows"]["train"]
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        assert not partials(out), "the next run removes what a killed run left"
        now = {k: v for k, v in snapshot(out).items() if k != outputs.RECORD}  # it holds times
        reference = reference or now
        assert now == reference
    assert (out / "notes.txt").read_text() == "the user's notes\n"


@needs_unshare
@pytest.mark.parametrize(("flag", "sub"), [("--model_dir", "m/code"), ("--output_dir", "o/csv")])
def test_a_read_only_folder_inside_an_output_folder_is_refused_first(flag, sub, tmp_path, channels):
    (tmp_path / sub).mkdir(parents=True)
    script = f"""
mount --bind {sub} {sub} && mount -o remount,bind,ro {sub}
set +e
"$PY" -m entry.train {' '.join(channel_flags(channels) + TRAIN_FAST)} --model_dir m --output_dir o
echo "exit=$?"
"""
    before = snapshot(tmp_path)
    result = in_mount_namespace(script, tmp_path)
    assert "exit=2" in result.stdout, result.stdout + result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {flag} {sub}: cannot be written") and "Read-only file system" in error, error
    assert snapshot(tmp_path) == before


def test_every_writer_removes_the_partial_files_a_killed_writer_left(tmp_path, small_model, prepared, channels,
                                                                      titanic_csv, monkeypatch, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    work = tmp_path / "work"
    shutil.copytree(small_model, work / "model")
    folders = [work, work / "model", work / "model" / "code", work / "outputs", work / "data"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        left_partial(folder / f".left.{gone.pid}-0badc0de.partial")
        (folder / ".notes.txt.partial").write_text("the user's, not of our form")
        (folder / f".mine.{gone.pid}-0badc0de.partial").write_text("the user's, in our form but not marked")
    monkeypatch.chdir(work)
    for command, argv in (
        ("predict", ["--model", "model", "--csv", str(prepared / "test_passengers.csv"), "--out", "p.csv"]),
        ("export", ["--model", "model", "--out", "t.pt"]),
        ("prepare", ["--csv", str(titanic_csv), "--out", "data"]),
        ("train", [*channel_flags(channels), *TRAIN_FAST, "--model_dir", "model2", "--output_dir", "outputs"]),
    ):
        code, _, err = invoke(command, argv, capsys)
        assert code == 0, err
    # The model folder was copied with its record: its files are still vouched for, and replaced.
    code, _, err = invoke("train", [*channel_flags(channels), *TRAIN_FAST, "--model_dir", "model"], capsys)
    assert code == 0, err
    assert model_pairs(work / "model")["epochs_run"] == 2
    for folder in folders:
        assert not (folder / f".left.{gone.pid}-0badc0de.partial").exists(), folder
        assert (folder / ".notes.txt.partial").read_text() == "the user's, not of our form"
        assert (folder / f".mine.{gone.pid}-0badc0de.partial").read_text() == "the user's, in our form but not marked"


def test_metrics_csv_counts_epochs_from_0_and_the_printed_lines_from_1_as_the_readme_says(tmp_path, channels,
                                                                                           monkeypatch, capsys):
    import csv
    import re

    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("train", [*channel_flags(channels), *TRAIN_FAST], capsys)
    assert code == 0, err
    printed = [int(n) for n in re.findall(r"^epoch=(\d+);", out, flags=re.MULTILINE)]
    with open(tmp_path / "outputs" / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    trained = sorted({int(row["epoch"]) for row in rows if row["train_loss"]})
    assert printed == [1, 2] and trained == [0, 1]
    # After the epochs: the evaluation of the best weights, at Lightning's epoch count = epochs_run.
    assert not rows[-1]["train_loss"] and int(rows[-1]["epoch"]) == model_pairs(tmp_path / "model")["epochs_run"] == 2
    # The outputs table says which count each file uses, with the same example.
    (row,) = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `outputs/csv/metrics.csv`")]
    assert "Lightning's count from 0" in row and "counts from 1" in row and "CSV epoch 0 is `epoch=1;`" in row
    assert "at epoch = `epochs_run`" in row


@pytest.mark.parametrize("failure", [RuntimeError("basic_ios::clear: iostream error"),
                                     OSError(28, "No space left on device")], ids=["torch", "errno"])
def test_a_write_onto_a_full_disk_names_the_disk_and_leaves_no_partial(tmp_path, monkeypatch, failure):
    from types import SimpleNamespace

    from titanic_lightning.io import atomic

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9 - 4096, free=4096))
    with pytest.raises(OSError, match=f"no space left on the disk holding {tmp_path} .4,096 bytes free. while writing m.pt"):
        with atomic.atomic_output(tmp_path / "m.pt"):
            raise failure
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_with_room_on_the_disk_keeps_its_own_error(tmp_path):
    from titanic_lightning.io import atomic

    with pytest.raises(RuntimeError, match="something else"):
        with atomic.atomic_output(tmp_path / "m.pt"):
            raise RuntimeError("something else")
    assert list(tmp_path.iterdir()) == []

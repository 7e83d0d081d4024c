"""The README's example commands, run in a fresh clone, leave `git status` empty; `make clean` then
removes what they wrote and nothing else: the user's files in the root and in the output folders,
and a file of ours edited since, stay."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env, run_entry

README = (REPO / "README.md").read_text()


def example(prefix: str) -> str:
    """The one README example line (in an indented code block) that starts with `prefix`, its
    comment and optional `[...]` parts left out."""
    lines = [line.strip() for line in README.splitlines() if line.startswith("    ") and line.strip().startswith(prefix)]
    assert len(lines) == 1, lines
    return re.sub(r"\s*\[[^\]]*\]", "", lines[0].split("#")[0]).strip()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts}


@pytest.mark.slow
def test_readme_examples_leave_git_status_empty_and_make_clean_removes_only_their_files(tmp_path, titanic_csv):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, capture_output=True, timeout=120)
    for path in (REPO / "launch", REPO / "titanic_lightning", REPO / "entry"):  # this checkout's code, committed or not
        shutil.rmtree(clone / path.name)
        shutil.copytree(path, clone / path.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", ".gitignore"):
        shutil.copy(REPO / name, clone / name)
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "this checkout",
                    "--allow-empty"], cwd=clone, check=True, capture_output=True)
    shutil.copy(titanic_csv, clone / "titanic.csv")  # the user's copy that the README's first example reads
    before = _files(clone)
    env = clean_env(PYTHONPATH=str(clone))

    def run(command: str) -> None:
        python = shlex.quote(sys.executable)
        line = re.sub(r"^python ", python + " ", command)
        result = subprocess.run(line, shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr[-3000:])

    assert "`python -m entry.train --epochs 200 --print_config > run.yaml`" in README
    commands = [
        example("python -m entry.prepare"),
        "python -m entry.train --epochs 200 --print_config > run.yaml",
        example("python -m entry.train --train") + " --epochs 2",  # the lesson's command, two epochs
        example("python -m entry.predict"),
        example("python -m entry.export --model model/ --format torchscript"),
        example("python launch/submit.py --dry-run"),
        "python launch/submit.py --local --hp epochs=1",  # the README's `--local [...]`, one epoch
        example("python launch/submit.py --compare runs/*.json --plot"),
        example("python launch/tune.py --local") + " --trials 2 --parallel 1 --hp epochs=1",
        "python launch/submit.py --compare runs/*.json jobs/*/summary.json tuning/*/tuning.json",
    ]
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        commands.insert(5, example("python -m entry.export --model model/ --format onnx"))
    except ImportError:
        pass
    for command in commands:
        run(command)
    made = set(_files(clone)) - set(before)
    assert {"model/model.pt", "outputs/predictions.csv", "model/titanic.pt", "runs/compare.png"} <= made
    assert any(name.startswith("tuning/") for name in made) and any(name.startswith("jobs/") for name in made)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", status.stdout

    # The user's files, in the root and among the commands' own, and a file of ours edited since.
    (job,) = (clone / "jobs").iterdir()
    tuning = next((clone / "tuning").iterdir())
    mine = {"notes.txt": b"mine\n", "model/notes.txt": b"mine\n", "outputs/csv/mine.csv": b"a,b\n",
            "runs/mine.json": b"{}\n", f"jobs/{job.name}/notes.txt": b"mine\n", "data/extra.npz": b"not ours",
            f"tuning/{tuning.name}/trials/0/notes.txt": b"mine\n"}
    for name, content in mine.items():
        (clone / name).write_bytes(content)
    edited = clone / "outputs" / "predictions.csv"
    edited.write_text(edited.read_text() + "# checked by hand\n")
    kept = {**before, **mine, "run.yaml": (clone / "run.yaml").read_bytes(), "outputs/predictions.csv": edited.read_bytes()}

    result = subprocess.run(["make", "clean", f"PYTHON={sys.executable}"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    left = _files(clone)
    assert set(left) == set(kept), (set(left) - set(kept), set(kept) - set(left))
    assert left == kept
    # The folders the commands made and left empty went too; those holding the user's files stay.
    assert not (clone / "model" / "code").exists() and not (clone / "outputs" / "tensorboard").exists()
    assert sorted(p.name for p in (clone / "jobs").iterdir()) == [job.name]
    assert sorted(p.name for p in job.iterdir()) == ["notes.txt"]


def test_make_clean_removes_the_logs_of_the_slurm_script_and_no_other_file(tmp_path):
    from titanic_lightning.io.clean import clean

    script = (REPO / "launch" / "slurm.sbatch").read_text()
    assert "#SBATCH --job-name=titanic\n" in script and "#SBATCH --output=slurm-%x-%j.out\n" in script
    assert 'echo "titanic: job ${SLURM_JOB_ID} (restart' in script  # the line each log starts with
    ours = {"slurm-titanic-12.out": "titanic: job 12 (restart 0) on n1: 1 node(s) x 2 task(s); folder jobs/slurm-12\n",
            "slurm-titanic-13.out": "titanic: job 13 (restart 1) on n1: 1 node(s) x 2 task(s); folder jobs/slurm-13\n"
                                    "titanic: job 13 (restart 0) ...\nepoch=1; train_loss=0.6\n"}
    theirs = {"slurm-titanic-14.out": "another script's log\n",
              "slurm-titanic-15.out": "titanic: job 16 (restart 0) a log renamed to another job's name\n",
              "slurm-titanic-x.out": "titanic: job x (restart 0)\n", "slurm-other-17.out": "titanic: job 17 (restart 0)\n",
              "slurm-titanic-18.out.bak": "titanic: job 18 (restart 0)\n", "sub/slurm-titanic-19.out": "titanic: job 19 \n"}
    for name, text in {**ours, **theirs}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "slurm-titanic-20.out").symlink_to(tmp_path / "slurm-titanic-12.out")
    (tmp_path / "slurm-titanic-21.out").mkdir()

    removed = clean(tmp_path)
    assert sorted(p.name for p in removed) == sorted(ours)
    left = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_dir() or p.is_symlink()}
    assert left == {*theirs, "slurm-titanic-20.out"}


@pytest.mark.slow
def test_make_clean_removes_the_checkpoint_a_run_wrote_and_keeps_one_it_did_not(tmp_path, prepared):
    from titanic_lightning.io.clean import clean

    data = ["--train", str(prepared / "train_data.npz"), "--val", str(prepared / "val_data.npz"), "--epochs", "2"]
    done = run_entry("train", *data, "--checkpoint_dir", "ck", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ck" / "last.ckpt").is_file()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "last.ckpt").write_bytes(b"the user's")  # refused by the resume check, left as it was
    refused = run_entry("train", *data, "--checkpoint_dir", "theirs", cwd=tmp_path)
    assert refused.returncode == 2 and "theirs/last.ckpt" in refused.stderr, refused.stderr[-3000:]
    (tmp_path / "notes.txt").write_text("mine\n")

    removed = clean(tmp_path)
    assert tmp_path / "ck" / "last.ckpt" in removed and tmp_path / "model" / "model.pt" in removed
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert left == ["notes.txt", "theirs", "theirs/last.ckpt"]
    assert (tmp_path / "theirs" / "last.ckpt").read_bytes() == b"the user's"

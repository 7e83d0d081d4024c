"""notebooks/titanic_sagemaker.ipynb: committed without outputs, and run top to bottom offline with
nbclient, from a copy in its own folder as a learner opens it: every cell runs, the AWS cells say
they were skipped, and everything it writes lands in its working folder."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.helpers import REPO, clean_env

NOTEBOOK = REPO / "notebooks" / "titanic_sagemaker.ipynb"
SKIPPED = "skipped: set RUN_ON_AWS = True"
# What the repository holds that a run of the notebook must leave alone.
REPO_OUTPUTS = ("data", "model", "outputs", "jobs", "runs", "tuning", "predictions.csv", "compare.png")


def test_the_notebook_is_committed_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "RUN_ON_AWS = False" in code[0].source  # the flag is the first thing a learner meets
    assert nb.metadata.kernelspec.name == "python3"
    # Each AWS cell is tagged, and guarded by the flag.
    aws = [c for c in code if "aws" in c.metadata.get("tags", [])]
    assert len(aws) == 3 and all("if RUN_ON_AWS" in c.source and "print(SKIPPED)" in c.source for c in aws)


def _snapshot(root):
    return {name: (root / name).stat().st_mtime_ns for name in REPO_OUTPUTS if (root / name).exists()}


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_offline(titanic_csv, tmp_path, monkeypatch):
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient

    # The kernel is this interpreter, whatever kernels the machine's Jupyter folders list.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder)
    (folder / "mine.txt").write_text("a learner's own file\n")
    before = _snapshot(REPO)

    env = clean_env(TITANIC_CSV=str(titanic_csv))
    for key in [k for k in env if k.startswith(("AWS_", "SAGEMAKER_")) or k in ("TITANIC_WORK", "MPLBACKEND")]:
        del env[key]
    nb = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    started = time.monotonic()
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(folder)}}).execute(env=env)
    print(f"notebook ran in {time.monotonic() - started:.1f} s")  # shown with -s or on failure

    # Nothing but its working folder was written beside it; the repository's outputs are untouched.
    assert sorted(p.name for p in folder.iterdir()) == sorted([NOTEBOOK.name, "mine.txt", "titanic-work"])
    assert (folder / "mine.txt").read_text() == "a learner's own file\n"
    assert _snapshot(REPO) == before
    work = folder / "titanic-work"
    assert (work / "outputs" / "curves.png").is_file() and (work / "model" / "model.pt").is_file()
    assert (work / "compare.png").read_bytes()[:4] == b"\x89PNG"
    (tuning,) = work.glob("tuning/*/tuning.png")
    predictions = (work / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "PassengerId,probability,prediction" and len(predictions) == 1 + 179
    records = sorted(p.name for p in (work / "runs").glob("*.json"))
    assert len(records) == 2 + 4  # the two emulated jobs and the four trials

    code = [c for c in nb.cells if c.cell_type == "code"]
    text = {id(c): "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream") for c in code}
    for cell in code:
        if "aws" in cell.metadata.get("tags", []):
            assert SKIPPED in text[id(cell)], cell.source
    pictures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert pictures == 3  # curves.png, compare.png, tuning.png
    assert any("test accuracy of the best trial's model" in t for t in text.values())
    assert any("titanic-lightning-m5-xlarge-x2-" in t and "titanic-lightning-m5-large-x1-" in t for t in text.values())

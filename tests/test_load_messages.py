"""A model.pt or last.ckpt that torch refuses to load weights-only (a pickled object) ends in one line
that names the file, and never in torch's advice to load it with weights_only=False."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import run_entry
from titanic_lightning.errors import UsageError


class Custom:
    """Stands for any object: loading it needs the pickle's code to run."""


@pytest.fixture
def pickled(tmp_path):
    def write(name: str):
        path = tmp_path / name
        torch.save({"format": "titanic-lightning/1", "state_dict": {}, "object": Custom()}, path)
        return path

    return write


def test_model_file_message_names_the_file_without_torchs_advice(pickled):
    from titanic_lightning.io.artifacts import load_model_file

    path = pickled("model.pt")
    with pytest.raises(UsageError) as exc:
        load_model_file(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: not a readable model file") and "weights_only" not in message
    assert not any(advice in message for advice in ("can still be loaded", "trust"))


def test_checkpoint_message_names_the_file_without_torchs_advice(pickled):
    from titanic_lightning.training.checkpoints import checkpoint_to_resume

    path = pickled("last.ckpt")
    with pytest.raises(UsageError) as exc:
        checkpoint_to_resume(path.parent, model=None, datamodule=None)
    message = str(exc.value)
    assert message.startswith(f"{path}: not a readable checkpoint")
    assert not any(advice in message for advice in ("weights_only", "can still be loaded", "trust"))


@pytest.mark.parametrize("entry", ["predict", "export"])
def test_the_entries_end_in_one_line(entry, pickled, tmp_path):
    model = pickled("model.pt")
    csv = tmp_path / "rows.csv"
    csv.write_text("PassengerId,Pclass,Sex,Age,SibSp,Parch,Fare,Embarked\n1,3,male,22,1,0,7.25,S\n")
    args = ["--model", str(model), "--csv", str(csv)] if entry == "predict" else ["--model", str(model),
                                                                                   "--out", str(tmp_path / "t.pt")]
    result = run_entry(entry, *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: not a readable model file"), result.stderr
    assert not any(advice in result.stderr for advice in ("weights_only", "can still be loaded", "trust"))
    assert not (tmp_path / "t.pt").exists()

"""The project as installed: `import launch` from any folder, cheaply, and a wheel that carries
launch/, entry/ and prices.json and still stages a job's code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO, clean_env

HEAVY = ("sagemaker", "boto3", "botocore", "torch", "lightning", "matplotlib", "pandas")


def _python(code: str, cwd, pythonpath, *args) -> dict:
    env = clean_env()
    env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


IMPORT_CHEAPLY = f"""
import json, sys
import launch
api = {{name: type(getattr(launch, name)).__name__ for name in launch.__all__}}
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"api": api, "heavy": heavy, "file": launch.__file__}}))
"""


def test_import_launch_from_another_folder_loads_no_sdk_and_no_torch(tmp_path):
    out = _python(IMPORT_CHEAPLY, tmp_path, REPO)
    assert out["file"] == str(REPO / "launch" / "__init__.py")
    assert out["api"] == {"job_spec": "function", "dry_run": "function", "run_local": "function",
                          "run_sagemaker": "function", "wait": "function", "compare": "function", "Run": "type",
                          "Comparison": "type", "JobSpec": "type", "UsageError": "type", "tune_local": "function",
                          "tune_sagemaker": "function", "tuning_request": "function", "Tuning": "type",
                          "run_slurm": "function"}
    assert out["heavy"] == []


STAGE_FROM_INSTALLED = """
import json, pathlib, sys
import entry.train, launch, titanic_lightning
from launch.jobs import code, prices
from titanic_lightning import dependencies

staged = code.stage(pathlib.Path(sys.argv[1]))
spec = launch.job_spec(hyperparameters={"epochs": 3})
print(json.dumps({
    "files": [m.__file__ for m in (launch, entry.train, titanic_lightning, dependencies)],
    "prices_as_of": prices.load().as_of, "hourly": launch.dry_run(spec)["estimated_usd_per_hour"],
    "pyproject_beside": dependencies.PYPROJECT.is_file(),
}))
"""


@pytest.mark.slow
def test_the_wheel_installs_launch_entry_and_prices_and_stages_a_jobs_code(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("launch", "entry", "titanic_lightning"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheels"), str(source)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("titanic_lightning-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)  # a pure-Python wheel installed is its files on the path
    assert {"launch/__init__.py", "launch/api.py", "launch/prices.json", "entry/train.py",
            "titanic_lightning/training/train.py"} <= names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)

    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    staged = tmp_path / "staged"
    out = _python(STAGE_FROM_INSTALLED, elsewhere, site, staged)
    assert all(f.startswith(str(site)) for f in out["files"]), out["files"]
    assert out["pyproject_beside"] is False  # the bounds come from the installed metadata
    assert out["prices_as_of"] == json.loads((REPO / "launch" / "prices.json").read_text())["as_of"]
    assert out["hourly"] == 0.115

    from launch.jobs import code
    from titanic_lightning import dependencies

    assert (staged / "entry" / "train.py").read_text() == (REPO / "entry" / "train.py").read_text()
    assert (staged / "titanic_lightning" / "training" / "train.py").is_file() and not (staged / "launch").exists()
    # The installed metadata writes each requirement's bounds in its own order: compare them as sets.
    assert _requirements(staged / "requirements.txt") == {_parsed(r) for r in dependencies.bounds(code.REQUIRED)}
    assert _requirements(staged / "titanic_lightning" / "dependencies.txt") == {_parsed(r) for r in dependencies.declared()}


def _parsed(line: str):
    from packaging.requirements import Requirement

    requirement = Requirement(line)
    return requirement.name, frozenset(requirement.extras), requirement.specifier


def _requirements(path) -> set:
    return {_parsed(line) for line in path.read_text().splitlines() if line.strip()}

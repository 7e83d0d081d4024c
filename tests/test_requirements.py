"""The requirements written for training jobs and for the serving container carry the same bounds as
pyproject.toml, whose lower bounds scripts/check_min_versions.sh installs and tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

from launch.jobs import code
from tests.helpers import clean_env
from titanic_lightning import dependencies, serving

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_job_and_serving_requirements_match_the_project(tmp_path):
    staged = code.stage(tmp_path / "code")
    shipped = (staged / code.REQUIREMENTS_FILE).read_text().split()
    assert len(shipped) == len(code.REQUIRED)
    declared = {_name(r): r for r in PYPROJECT["dependencies"]}
    for requirement in (*shipped, *serving.requirements()):
        assert declared.get(_name(requirement)) == requirement, requirement


def test_bounds_are_read_from_pyproject_when_the_code_is_staged(tmp_path, monkeypatch):
    """A bound changed in pyproject.toml reaches the job's requirements and, through the staged
    package (the container has no pyproject.toml), the serving container's."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"pandas>=2.1"' in text
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(text.replace('"pandas>=2.1"', '"pandas>=2.2.3"'))
    monkeypatch.setattr(dependencies, "PYPROJECT", pyproject)
    staged = code.stage(tmp_path / "code")
    assert "pandas>=2.2.3" in (staged / code.REQUIREMENTS_FILE).read_text().split()

    assert not (staged / "pyproject.toml").exists()
    in_container = subprocess.run(
        [sys.executable, "-c", "from titanic_lightning import serving; print(' '.join(serving.requirements()))"],
        cwd=staged, env=clean_env(PYTHONPATH=str(staged)), capture_output=True, text=True, timeout=60)
    assert in_container.returncode == 0, in_container.stderr
    assert in_container.stdout.split() == ["numpy>=1.26", "pandas>=2.2.3"]


def test_every_dependency_has_a_lower_bound_and_lightning_takes_weights_only():
    requirements = PYPROJECT["dependencies"] + [r for extra in PYPROJECT["optional-dependencies"].values() for r in extra]
    assert all(">=" in r for r in requirements), requirements
    lightning = next(r for r in PYPROJECT["dependencies"] if _name(r) == "lightning")
    assert re.search(r">=\s*2\.(6|[7-9]|\d\d)", lightning), lightning  # Trainer.fit(weights_only=) is 2.6's

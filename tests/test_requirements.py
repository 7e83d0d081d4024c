"""The requirements written for training jobs and for the serving container carry the same bounds as
pyproject.toml, whose lower bounds scripts/check_min_versions.sh installs and tests."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

from launch import code
from titanic_lightning import serving

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_job_and_serving_requirements_match_the_project():
    declared = {_name(r): r for r in PYPROJECT["dependencies"]}
    for requirement in (*code.REQUIREMENTS, *serving.REQUIREMENTS):
        assert declared.get(_name(requirement)) == requirement, requirement


def test_every_dependency_has_a_lower_bound_and_lightning_takes_weights_only():
    requirements = PYPROJECT["dependencies"] + [r for extra in PYPROJECT["optional-dependencies"].values() for r in extra]
    assert all(">=" in r for r in requirements), requirements
    lightning = next(r for r in PYPROJECT["dependencies"] if _name(r) == "lightning")
    assert re.search(r">=\s*2\.(6|[7-9]|\d\d)", lightning), lightning  # Trainer.fit(weights_only=) is 2.6's

#!/usr/bin/env bash
# Install the lowest declared version of every dependency in a fresh virtual environment and run the
# fast tests there, so that each `>=` bound in pyproject.toml (and the requirements written for jobs
# and serving, which tests/test_requirements.py keeps equal to it) is a version that was run.
#
#   bash scripts/check_min_versions.sh              # about 5-10 minutes; prints the test summary
#   KEEP=1 bash scripts/check_min_versions.sh       # keep the venv (its path is printed)
#
# Every `name>=X` of [project.dependencies] and of the extras in EXTRAS is installed as `name==X`,
# torch included. The venv sees no system site-packages. PYTEST_ARGS picks the tests (default: all
# but the slow ones). Needs network access to the package index unless the pins are cached.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${EXTRAS:-launch test onnx}
PYTEST_ARGS=${PYTEST_ARGS:-'-m "not slow" -x -q -p no:cacheprovider'}
work=$(mktemp -d)
venv="$work/venv"
cleanup() { if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "venv kept: $venv"; fi; }
trap cleanup EXIT

"$PYTHON" -m venv "$venv"
"$venv/bin/python" - "$EXTRAS" >"$work/minimums.txt" <<'PY'
import re
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
requirements = list(project["dependencies"])
for extra in sys.argv[1].split():
    requirements += project["optional-dependencies"][extra]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+(?:\[[^\]]+\])?)\s*>=\s*([0-9][^,;\s]*).*", requirement)
    if not match:
        sys.exit(f"{requirement!r} declares no lower bound (name>=X); every dependency must have one")
    print(f"{match[1]}=={match[2]}")
PY
echo "python: $("$venv/bin/python" --version)"
echo "pins:"; sed 's/^/  /' "$work/minimums.txt"
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$work/minimums.txt"
"$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e .
# pip says so above if two pins conflict; this also catches a pin that another package's
# requirement lifted, so that what is tested is what is declared.
"$venv/bin/python" - "$work/minimums.txt" <<'PY'
import re
import sys
from importlib.metadata import version

from packaging.version import Version

wrong = []
for line in open(sys.argv[1]):
    name, pinned = re.sub(r"\[.*\]", "", line.strip()).split("==")
    have = version(name)
    print(f"  installed {name} {have}")
    if Version(Version(have).base_version) != Version(pinned):  # 2.13.0+cpu is 2.13.0; 2.6 is 2.6.0
        wrong.append(f"{name} {have} (pinned {pinned})")
sys.exit(f"not the declared minimum: {', '.join(wrong)}" if wrong else 0)
PY
echo "running: pytest $PYTEST_ARGS"
eval "\"$venv/bin/python\" -m pytest $PYTEST_ARGS"

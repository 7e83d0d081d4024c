"""A wheelhouse: the wheels a job's requirements.txt needs, travelling as its `wheels` channel, so that
its hosts install with no index (no billed time on the public index; works with network isolation).

pip resolves the requirements with what the target image provides (its torch) for the target's platform
and Python; every wheel goes in but the provided packages and what they pin exactly (CUDA libraries,
triton). numpy, pandas and the like stay in: pip keeps the image's copy when it satisfies the bounds.
Cached under `<cache>/wheelhouse/<key>/`; `manifest.json`, written last, marks one complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from launch.console import log
from titanic_lightning.errors import UsageError
from titanic_lightning.sagemaker_facts import OPT_ML

CHANNEL = "wheels"
MANIFEST = "manifest.json"
CACHE_VARIABLE = "TITANIC_LIGHTNING_CACHE"

# The PyTorch 2.8 training image's torch, and the platforms its wheels may carry (Ubuntu 22.04, glibc 2.35:
# manylinux_2_28 and older; pip 23 does not widen one manylinux tag to the older ones, so each is named).
IMAGE_TORCH = "torch==2.8.0"
IMAGE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                   "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")


@dataclass(frozen=True)
class Target:
    """Where the wheels go: platform tags and Python (empty: this interpreter's), and what is already `provided`."""

    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    provided: tuple[str, ...] = ()

    @classmethod
    def image(cls, py_version: str) -> Target:
        """The SageMaker PyTorch training image (`py_version` as the image names it: py312)."""
        digits = py_version.removeprefix("py")
        return cls(python_version=f"{digits[0]}.{digits[1:]}", platforms=IMAGE_PLATFORMS, provided=(IMAGE_TORCH,))

    @classmethod
    def here(cls) -> Target:
        """This machine and interpreter, with its torch as the provided package (`--local`)."""
        from importlib import metadata

        return cls(provided=(f"torch=={metadata.version('torch')}",))

    def pip_options(self) -> list[str]:
        options = ["--only-binary=:all:"]
        if self.python_version:
            options += ["--python-version", self.python_version, "--implementation", "cp"]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options

    def describe(self) -> dict:
        return {"python_version": self.python_version or "this interpreter's",
                "platforms": list(self.platforms) or "this machine's", "provided": list(self.provided)}


def default_cache() -> Path:
    """`$TITANIC_LIGHTNING_CACHE`, else `$XDG_CACHE_HOME/titanic-lightning`, else ~/.cache/titanic-lightning."""
    if os.environ.get(CACHE_VARIABLE):
        return Path(os.environ[CACHE_VARIABLE])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "titanic-lightning"


def key(requirements: list[str], target: Target, pip_args: tuple[str, ...] = ()) -> str:
    """The wheelhouse's name: the same requirements for the same target share one."""
    text = json.dumps({"requirements": list(requirements), "target": target.describe(), "pip": list(pip_args)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def requirements_lines(requirements: list[str]) -> list[str]:
    """requirements.txt's lines in wheelhouse mode: no index, the wheels channel as the only source. pip
    reads the relative link from the file's folder (the code channel, or a `--local` job's); the absolute
    one serves a tuning job's trials, which install from a copy in /opt/ml/code (pip skips a missing one)."""
    return ["--no-index", f"--find-links ../{CHANNEL}", f"--find-links {OPT_ML}/input/data/{CHANNEL}", *requirements]


@dataclass
class Wheelhouse:
    path: Path
    key: str
    wheels: list[str] = field(default_factory=list)
    built: bool = False  # False: found complete in the cache

    @property
    def files(self) -> list[Path]:
        return [self.path / name for name in self.wheels]


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        detail = " ".join(" ".join(lines[-3:]).split()) or f"pip exited with code {done.returncode}"
        raise UsageError(f"building the wheelhouse: {what} failed: {detail}")


def _exact_pins(item: dict) -> set[str]:
    """The projects an item's metadata requires with `==`, outside extras (a torch build's CUDA libraries, triton)."""
    requirements = [Requirement(text) for text in item["metadata"].get("requires_dist") or []]
    return {canonicalize_name(r.name) for r in requirements
            if "extra" not in str(r.marker or "") and any(s.operator == "==" for s in r.specifier)}


def resolve(requirements: list[str], target: Target, pip_args: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, version) of every wheel the requirements need on `target` beyond what it provides."""
    with tempfile.TemporaryDirectory(prefix="titanic-wheels-") as tmp:
        report = Path(tmp) / "report.json"
        _pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
              "--target", str(Path(tmp) / "target"), *target.pip_options(), *pip_args,
              *requirements, *target.provided], "resolving the requirements")
        items = json.loads(report.read_text())["install"]
    provided = {canonicalize_name(Requirement(r).name) for r in target.provided}
    skipped = provided.union(*(_exact_pins(item) for item in items if canonicalize_name(item["metadata"]["name"]) in provided))
    return sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in items
                  if canonicalize_name(item["metadata"]["name"]) not in skipped)


def _complete(path: Path) -> list[str] | None:
    """The wheels of the wheelhouse at `path` when its manifest and every wheel it lists are there."""
    try:
        wheels = json.loads((path / MANIFEST).read_text())["wheels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return wheels if all((path / w).is_file() for w in wheels) else None


def build(requirements: list[str], target: Target, cache: Path | None = None,
          pip_args: tuple[str, ...] = ()) -> Wheelhouse:
    """The wheelhouse for `requirements` on `target`: cached, else resolved and downloaded by pip (with `pip_args`)."""
    name = key(requirements, target, pip_args)
    root = (cache or default_cache()) / "wheelhouse"
    path = root / name
    cached = _complete(path)
    if cached is not None:
        return Wheelhouse(path=path, key=name, wheels=cached)
    started = time.perf_counter()
    log(f"building the wheelhouse {path} (once for these requirements) ...")
    pins = [f"{n}=={v}" for n, v in resolve(requirements, target, pip_args)]
    try:
        root.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    except OSError as exc:
        raise UsageError(f"building the wheelhouse: cannot write to {root} ({exc.strerror}); set "
                         f"{CACHE_VARIABLE} to a writable folder") from None
    try:
        if pins:
            _pip(["download", "--no-deps", "--quiet", "--dest", str(partial), *target.pip_options(), *pip_args, *pins],
                 "downloading the wheels")
        wheels = sorted(p.name for p in partial.iterdir() if p.suffix == ".whl")
        (partial / MANIFEST).write_text(json.dumps({"requirements": requirements, "target": target.describe(),
                                                    "wheels": wheels}, indent=2) + "\n")
        cached = _complete(path)
        if cached is not None:  # another build of the same wheelhouse finished meanwhile: keep that one
            return Wheelhouse(path=path, key=name, wheels=cached)
        if path.exists():  # an incomplete one left by an interrupted build: only this module writes here
            shutil.rmtree(path)
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    seconds = round(time.perf_counter() - started, 1)
    size = sum((path / w).stat().st_size for w in wheels) / 2**20
    log(f"wheelhouse built: {len(wheels)} wheels, {size:.0f} MiB, {seconds} s")
    return Wheelhouse(path=path, key=name, wheels=wheels, built=True)

"""Job start-up: installing requirements.txt from a package index against from the wheelhouse.

Run: `python -m bench.startup [--rounds 3] [--json PATH]`

What a SageMaker host does before training (`install_requirements.py requirements.txt`, the SDK's
own script), done here as `--local --container-venv` does it: each round a fresh host environment
holding only what the PyTorch training image holds (torch, numpy, pandas, scikit-learn; built once
in the cache), one install per mode, interleaved:

* index — the plain requirements.txt, from this machine's pip configuration (its index, local
  mirrors and pip's HTTP cache: a warm cache, so a lower bound on what a fresh host pays);
* wheelhouse — `--no-index --find-links ../wheels`, the wheels built for this machine and Python.

The wheelhouse and the base environment are built before the first round (not timed here; the
build time is printed). The table shows the median and the fastest install per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from titanic_lightning.command import run_command

MODES = ("index", "wheelhouse")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def install_once(mode: str, base_python: Path, wheels: list[Path], root: Path) -> float:
    """A fresh host environment and job folder; the install's wall seconds."""
    from launch.jobs import code, container

    job = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=root))
    code_dir = code.stage(job / "code", wheelhouse=mode == "wheelhouse")
    (job / "wheels").mkdir()
    for wheel in wheels:
        (job / "wheels" / wheel.name).symlink_to(wheel)
    python = container.host_venv(job / "venv", base_python)
    exit_code, seconds = container.install_requirements(python, code_dir, job / "install.log")
    if exit_code != 0:
        raise SystemExit(f"error: the {mode} install failed (exit code {exit_code}); see {job / 'install.log'}")
    return seconds


def measure(rounds: int):
    """Install seconds per mode over `rounds` interleaved rounds, the wheelhouse, and the set-up seconds."""
    from launch.jobs import code, container, wheelhouse

    started = time.perf_counter()
    base_python = container.image_venv()
    built = wheelhouse.build(code.requirements(), wheelhouse.Target.here())
    setup = round(time.perf_counter() - started, 1)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="titanic-startup-") as tmp:
        for _ in range(rounds):
            for mode in MODES:
                times[mode].append(install_once(mode, base_python, built.files, Path(tmp)))
                print(f"{mode}: {times[mode][-1]:.1f} s", file=sys.stderr, flush=True)
    return times, built, setup


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="installs per mode, interleaved (default 3)")
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds {args.rounds}: must be at least 1")

    times, built, setup = measure(args.rounds)
    size = sum(p.stat().st_size for p in built.files) / 2**20

    print(f"machine: {_cpu()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}; "
          f"{args.rounds} rounds; set-up (base environment and wheelhouse, cached after the first run) {setup} s; "
          f"wheelhouse {len(built.wheels)} wheels, {size:.0f} MiB")
    print("| install of requirements.txt | median s | fastest s |")
    print("|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {statistics.median(times[mode]):.1f} | {min(times[mode]):.1f} |")
    ratio = statistics.median(times["index"]) / statistics.median(times["wheelhouse"])
    print(f"wheelhouse: {ratio:.2f}x faster than the index (medians)")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": times, "wheels": len(built.wheels), "wheel_mib": size,
                                               "setup_seconds": setup}, indent=2) + "\n")


if __name__ == "__main__":
    run_command(main)

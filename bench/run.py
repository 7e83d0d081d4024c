"""Benchmark suite: the project's training against plain PyTorch and a typical Lightning setup.

Run: `python -m bench.run [--quick] [--json PATH] [--device cpu|cuda] [--pairs 3] [--cases 3,4]`

Every case runs as separate processes, interleaved (ours, reference, template, ours, ... for
`--pairs` rounds), and the table shows medians and the ratio of ours to the reference:

1. lesson workload — 1000 full-batch epochs, lr 0.001, 7-64-32-1 (whole-process wall time, test acc);
   its fit time also against a bare Lightning Trainer on the same epochs (`bench/lightning_bare.py`:
   one `self.log` per epoch, no logger or checkpoint), Lightning's own floor, and against the same
   workload written the way Lightning's docs write it (`../shared/bench/lightning_idiomatic.py`
   beside the repository, or `--idiomatic PATH`: automatic optimization, `self.log`, a torchmetrics
   MetricCollection; CPU; the row is skipped with its reason when the script is absent)
2. time to a better model — ours with its defaults (early stopping) vs case 1's plain script
3. throughput at scale — synthetic Titanic-shaped data, batch 4096 (train rows/s, peak RSS)
4. DDP scaling — strong scaling at one thread per process: 2 CPU processes (gloo) against 1, each
   with OMP_NUM_THREADS=1, on case 3's 2 M rows; and the all-reduce share of a DDP step
   (`bench/allreduce.py`: steps with and without the gradient all-reduce, two processes)
5. start-up — `python -m entry.train --help`; importing what a training run imports before it
   fits, against `import lightning` and `import torch` (fresh processes)
6. job start-up — a host's install of the job's requirements.txt with the SDK's own script, in an
   environment holding only what the training image holds: from the wheelhouse against the index
   (`bench/startup.py`; CPU only)
7. local search — `launch/tune.py --local --trials 8 --parallel 2` against one run of
   `python -m entry.train` with its defaults, both whole commands on the same prepared data (CPU only)

`--quick` (under 3 minutes on 2 cores) runs every case with 0.5 M rows and one epoch, and times
the imports once; the full run uses 2 M rows (3 epochs) and 20 M rows (1 epoch). `--cases` runs
only the numbered cases (1 and 2 run together; the imports' row runs with them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import synth
from titanic_lightning.command import run_command

PY = sys.executable
BATCH = 4096


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one process; return its wall time, its own peak resident memory in MiB (wait4 reports
    it per process) and the fields of the last JSON line it printed."""
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([PY, *argv], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            lines = err.read().strip().splitlines()
            raise RuntimeError(f"{' '.join(argv[:4])} failed: {lines[-1] if lines else out[-500:]}")
    result = {"wall": wall, "rss": usage.ru_maxrss / 1024}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            result.update(json.loads(line))
            break
        if line.startswith("fit_seconds="):  # the idiomatic reference prints its fit time this way
            result["fit_seconds"] = float(line.split("=", 1)[1])
            break
    return result


def ours(data: Path, work: Path, *flags: str, device: str) -> list[str]:
    model = work / f"model-{time.monotonic_ns()}"
    return ["-m", "entry.train", "--train", str(data / "train_data.npz"), "--val", str(data / "val_data.npz"),
            "--test", str(data / "test_data.npz"), "--model_dir", str(model), "--output_dir", str(work / "outputs"),
            "--accelerator", "gpu" if device == "cuda" else "cpu", *flags]


def ours_metrics(argv: list[str]) -> dict:
    return json.loads((Path(argv[argv.index("--model_dir") + 1]) / "metrics.json").read_text())


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Table:
    def __init__(self):
        self.rows = []

    def add(self, case, metric, our, ref, template=None, target=""):
        ratio = None if our is None or not ref else our / ref
        self.rows.append((case, metric, our, ref, template, ratio, target))

    def print(self):
        print("| case | metric | ours | reference | typical Lightning | ours / reference | target |")
        print("|---|---|---|---|---|---|---|")
        for case, metric, our, ref, template, ratio, target in self.rows:
            print(f"| {case} | {metric} | {fmt(our)} | {fmt(ref)} | {fmt(template)} | "
                  f"{'–' if ratio is None else f'{ratio:.2f}'} | {target} |")


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# The lesson workload as Lightning's docs would write it, kept beside the repository (not part of it).
IDIOMATIC = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "lightning_idiomatic.py"


def lesson_cases(table: Table, data: Path, work: Path, pairs: int, device: str, raw: dict,
                 idiomatic: Path = IDIOMATIC) -> None:
    lesson_flags = ("--batch_size", "1000000", "--epochs", "1000", "--early_stopping", "false", "--learning_rate", "0.001")
    plain = ["-m", "bench.lesson_plain", "--train", str(data / "train_data.npz"), "--val", str(data / "val_data.npz"),
             "--test", str(data / "test_data.npz"), "--epochs", "1000", "--learning_rate", "0.001",
             "--model", str(work / "nn_model.pth")]
    template = ["-m", "bench.lightning_template", "--data", str(data), "--epochs", "1000", "--batch_size", "1000000",
                "--accelerator", "gpu" if device == "cuda" else "cpu"]
    bare = ["-m", "bench.lightning_bare", "--data", str(data), "--epochs", "1000", "--learning_rate", "0.001",
            "--accelerator", "gpu" if device == "cuda" else "cpu"]
    reference = [str(idiomatic), "--train", str(data / "train_data.npz"), "--val", str(data / "val_data.npz"),
                 "--epochs", "1000"]
    skip_idiomatic = (f"{idiomatic} is absent" if not idiomatic.is_file()
                      else "it trains on the CPU only" if device != "cpu" else None)
    if skip_idiomatic:
        print(f"skipping the idiomatic Lightning reference: {skip_idiomatic}", file=sys.stderr, flush=True)
    runs = {"ours": [], "plain": [], "template": [], "bare": [], "idiomatic": [], "ours_default": []}
    for _ in range(pairs):
        argv = ours(data, work, *lesson_flags, device=device)
        runs["ours"].append({**measure(argv), **ours_metrics(argv)})
        if not skip_idiomatic:
            runs["idiomatic"].append(measure(reference))
        runs["plain"].append(measure(plain))
        runs["template"].append(measure(template))
        runs["bare"].append(measure(bare))
        argv = ours(data, work, device=device)
        runs["ours_default"].append({**measure(argv), **ours_metrics(argv)})
    raw["lesson"] = runs
    m = {k: median(r["wall"] for r in v) for k, v in runs.items()}
    table.add("1 lesson workload", "whole-process s", m["ours"], m["plain"], m["template"], "≤ 1.5")
    table.add("1 lesson workload", "test acc", median(r["test_acc"] for r in runs["ours"]),
              median(r["test_acc"] for r in runs["plain"]))
    table.add("1 lesson workload", "fit s (no imports)", median(r["fit_seconds"] for r in runs["ours"]),
              median(r["fit_seconds"] for r in runs["plain"]), median(r["fit_seconds"] for r in runs["template"]))
    table.add("1 lesson workload", "fit s vs bare Lightning Trainer", median(r["fit_seconds"] for r in runs["ours"]),
              median(r["fit_seconds"] for r in runs["bare"]), None, "≤ 1.5")
    if runs["idiomatic"]:
        table.add("1 lesson workload", "fit s vs idiomatic Lightning", median(r["fit_seconds"] for r in runs["ours"]),
                  median(r["fit_seconds"] for r in runs["idiomatic"]), None, "≤ 1.2")
    table.add("2 better model", "whole-process s", m["ours_default"], m["plain"], None, "≤ 1.5")
    table.add("2 better model", "test acc (mean)", statistics.mean(r["test_acc"] for r in runs["ours_default"]),
              statistics.mean(r["test_acc"] for r in runs["plain"]), None, "> 1")


# What `python -m entry.train` imports before it fits (on prepared data), in a fresh process.
TRAIN_IMPORTS = ("import entry.train, titanic_lightning.config, titanic_lightning.training.layout, "
                 "titanic_lightning.environment, titanic_lightning.training.train")


def import_costs(table: Table, pairs: int, raw: dict) -> None:
    costs = {"torch": [], "lightning": [], "ours": []}
    for _ in range(pairs):
        costs["torch"].append(measure(["-c", "import torch"])["wall"])
        costs["lightning"].append(measure(["-c", "import lightning"])["wall"])
        costs["ours"].append(measure(["-c", TRAIN_IMPORTS])["wall"])
    raw["imports"] = costs
    m = {k: median(v) for k, v in costs.items()}
    table.add("1-2 import", "entry.train's imports s (ref: import lightning)", m["ours"], m["lightning"], None,
              f"≤ Lightning + 0.3 s (+{m['ours'] - m['lightning']:.2f} s)")
    table.add("1-2 import", "import lightning s (ref: import torch)", m["lightning"], m["torch"], None, "(context)")


def throughput_case(table: Table, rows: int, epochs: int, work: Path, pairs: int, device: str, raw: dict,
                    template: bool = True) -> Path:
    data = synth.write(rows, work / f"synth-{rows}")
    label = f"3 throughput {rows / 1_000_000:g} M rows"
    flags = ("--batch_size", str(BATCH), "--epochs", str(epochs), "--early_stopping", "false")
    plain = ["-m", "bench.loop_plain", "--data", str(data), "--epochs", str(epochs), "--batch_size", str(BATCH),
             "--device", device]
    tmpl = ["-m", "bench.lightning_template", "--data", str(data), "--epochs", str(epochs), "--batch_size", str(BATCH),
            "--accelerator", "gpu" if device == "cuda" else "cpu"]
    runs = {"ours": [], "plain": [], "template": []}
    for _ in range(pairs):
        argv = ours(data, work, *flags, device=device)
        runs["ours"].append({**measure(argv), **ours_metrics(argv)})
        runs["plain"].append(measure(plain))
        if template:
            runs["template"].append(measure(tmpl))
    raw[label] = runs
    rate = {k: median(r.get("train_rows_per_second") for r in v) for k, v in runs.items()}
    rss = {k: median(r["rss"] for r in v) for k, v in runs.items()}
    table.add(label, "train rows/s", rate["ours"], rate["plain"], rate["template"],
              "≥ 0.95" + (f" (ours / template {rate['ours'] / rate['template']:.1f}, ≥ 20)" if rate["template"] else ""))
    data_mib = sum(f.stat().st_size for f in data.glob("*_data.npz")) / 2**20
    table.add(label, "peak RSS MiB", rss["ours"], rss["plain"], rss["template"],
              f"≤ {1.5 * data_mib + 1536:,.0f} MiB (1.5 × {data_mib:,.0f} + 1536)")
    return data


def ddp_case(table: Table, data: Path, work: Path, pairs: int, raw: dict, epochs: int) -> None:
    """Strong scaling at a fixed thread count: 2 processes x 1 thread against 1 process x 1 thread."""
    from bench import allreduce

    flags = ("--batch_size", str(BATCH), "--epochs", str(epochs), "--early_stopping", "false")
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"1": [], "2": [], "allreduce": []}
    for _ in range(pairs):
        for processes in ("1", "2"):
            argv = ours(data, work, *flags, "--cpu_processes", processes, device="cpu")
            measure(argv, env=one_thread)
            runs[processes].append(ours_metrics(argv)["train_rows_per_second"])
        runs["allreduce"].append(allreduce.measure())
    raw["ddp"] = runs
    label = f"4 DDP 2 × 1 thread vs 1 × 1, {int(data.name.split('-')[-1]) / 1_000_000:g} M rows"
    table.add(label, "train rows/s", median(runs["2"]), median(runs["1"]), None, "≥ 1.6")
    probe = {k: median(r[k] for r in runs["allreduce"]) for k in runs["allreduce"][0]}
    table.add(label, "all-reduce share of a step", probe["allreduce_share"], None, None,
              f"(step {probe['step_ms']:.2f} ms, {probe['step_without_allreduce_ms']:.2f} ms without it)")


def startup_case(table: Table, pairs: int, raw: dict) -> None:
    times = [measure(["-m", "entry.train", "--help"])["wall"] for _ in range(pairs)]
    raw["startup"] = times
    table.add("5 start-up", "--help s", median(times), 1.5, None, "≤ 1.5 s (reference: the target)")


def install_case(table: Table, pairs: int, raw: dict) -> None:
    """A job host's requirements install, from the index and from the wheelhouse (`bench.startup`)."""
    from bench import startup

    times, _, _ = startup.measure(pairs)
    raw["install"] = times
    table.add("6 job start-up", "install s", median(times["wheelhouse"]), median(times["index"]), None,
              "(context: wheelhouse needs no index)")


TUNE = Path(__file__).resolve().parents[1] / "launch" / "tune.py"
SEARCH_TRIALS, SEARCH_PARALLEL = 8, 2


def search_case(table: Table, data: Path, work: Path, pairs: int, raw: dict) -> None:
    """An 8-trial local search (2 at a time) against one default training run, interleaved."""
    runs = {"search": [], "one run": []}
    for i in range(pairs):
        runs["one run"].append(measure(ours(data, work, device="cpu"))["wall"])
        search = [str(TUNE), "--local", "--data", str(data), "--trials", str(SEARCH_TRIALS), "--parallel",
                  str(SEARCH_PARALLEL), "--out", str(work / "tuning"), "--runs-dir", str(work / f"runs-{i}")]
        runs["search"].append(measure(search)["wall"])
    raw["search"] = runs
    table.add("7 local search", f"{SEARCH_TRIALS} trials, {SEARCH_PARALLEL} at a time: s", median(runs["search"]),
              median(runs["one run"]), None, "≤ 2.0 (reference: one run)")


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"
    if device == "cuda":
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


CASES = frozenset(range(1, 8))


def cases_list(text: str) -> frozenset[int]:
    try:
        chosen = frozenset(int(part) for part in text.split(","))
    except ValueError:
        chosen = frozenset()
    if not chosen or not chosen <= CASES:
        raise argparse.ArgumentTypeError(f"expected case numbers 1-7 separated by commas, got {text!r}")
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.5 M rows, one epoch (under 3 minutes on 2 cores)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--csv", default=None, help="Titanic CSV (default: $TITANIC_CSV, cache, download)")
    parser.add_argument("--cases", type=cases_list, default=CASES, help="comma-separated case numbers (default: all)")
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of case 3's (and 4's) synthetic data instead of the defaults (one size)")
    parser.add_argument("--no_template", action="store_true",
                        help="leave out case 3's typical-Lightning template (the slowest process by far)")
    parser.add_argument("--idiomatic", type=Path, default=IDIOMATIC,
                        help="the idiomatic Lightning reference script for case 1 (default: %(default)s)")
    args = parser.parse_args(argv)
    cases = args.cases

    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.data.prepare import prepare

    table, raw = Table(), {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if cases & {1, 2}:
            lesson_data = work / "lesson"
            prepare(resolve_csv(args.csv), lesson_data, "basic")  # the lesson's seven features
            lesson_cases(table, lesson_data, work, args.pairs, args.device, raw, args.idiomatic)
            import_costs(table, 1 if args.quick else args.pairs, raw)
        rows, epochs = (500_000, 1) if args.quick else (2_000_000, 3)
        rows = args.rows or rows
        if 3 in cases:
            throughput_case(table, rows, epochs, work, args.pairs, args.device, raw, template=not args.no_template)
            if not args.quick and not args.rows:
                throughput_case(table, 20_000_000, 1, work, args.pairs, args.device, raw, template=not args.no_template)
        if 4 in cases and args.device == "cpu":
            ddp_case(table, synth.write(rows, work / f"synth-{rows}"), work, args.pairs, raw,
                     epochs=1 if args.quick else 2)
        if 5 in cases:
            startup_case(table, args.pairs, raw)
        if 6 in cases and args.device == "cpu":
            install_case(table, args.pairs, raw)
        if 7 in cases and args.device == "cpu":
            search_data = work / "prepared"
            prepare(resolve_csv(args.csv), search_data)
            search_case(table, search_data, work, args.pairs, raw)
    print(f"machine: {machine(args.device)}; device {args.device}; {args.pairs} interleaved rounds; "
          f"{time.strftime('%Y-%m-%d')}; {time.perf_counter() - started:.0f} s")
    table.print()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(args.device), "device": args.device, "runs": raw}, indent=2))


if __name__ == "__main__":
    run_command(main)  # a missing CSV or another user mistake: one line, exit 2

"""What a tuning reports, here or on SageMaker: the summary object, the table of trials and tuning.png.

The summary (`tuning.json` in the tuning's folder, and the last line the command prints):

    {"status": "Completed" | "Stopped" | "Failed",  "tuning_job": NAME,  "mode": "local" | "sagemaker",
     "search": "bayesian", "objective": {"metric": "val_loss", "type": "Minimize"},
     "trials": [{"trial": 0, "hyperparameters": {...}, "status": "Completed" | "Pruned" | "Failed" | "Stopped",
                 "val_loss": 0.42, "val_acc": 0.81, "wall_seconds": 12.3}, ...],
     "best": {"trial": 3, "hyperparameters": {...}, "val_loss": ..., "val_acc": ..., "model_artifact": PATH_OR_S3_URI},
     "wall_seconds": 95.2, "folder": "tuning/NAME"}

`best` is the completed trial with the best objective (null when none completed); its
`model_artifact` is what `python -m entry.predict --model` takes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import secrets
import time
from pathlib import Path

from launch.records.report import fmt
from launch.tuning.space import CATEGORICAL, CONTINUOUS, Plan
from titanic_lightning.io.outputs import writing

SUMMARY_FILE = "tuning.json"
PICTURE_FILE = "tuning.png"
ROLE = "tune"  # the command that writes these files, in the folder's record (titanic_lightning.io.outputs)
TUNING_BASE = "titanic-tune"  # short: SageMaker's tuning job names have at most 32 characters
# Beyond the required keys, what `--compare` shows of a trial, where the trial has it.
TRIAL_EXTRAS = ("job_name", "training_job", "instance_type", "instance_count", "training_seconds", "billable_seconds",
                "estimated_cost_usd", "model_artifact")
# Tick positions within a decade, coarsest first; the first set that puts at least 2 ticks in view is used.
LOG_TICK_SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(x / 10 for x in range(10, 100, 2)))
MAX_LOG_TICKS = 5


def tuning_name() -> str:
    """`titanic-tune-<YYmmdd-HHMMSS>-<4 random hex digits>`: a valid tuning job name (31 characters)."""
    return f"{TUNING_BASE}-{time.strftime('%y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def _ranking(plan: Plan):
    """The sort key of trials: the best objective first, trials without one last."""
    sign = 1 if plan.objective_type == "Minimize" else -1
    return lambda t: (t.get(plan.objective) is None, sign * (t.get(plan.objective) or 0.0), str(t["trial"]))


def best_of(trials: list[dict], plan: Plan) -> dict | None:
    scored = [t for t in trials if t["status"] == "Completed" and _number(t.get(plan.objective)) is not None]
    return min(scored, key=_ranking(plan)) if scored else None


def summary(name: str, mode: str, plan: Plan, trials: list[dict], wall_seconds: float, folder: Path,
            stopped: bool) -> dict:
    """The summary object; `trials` hold `trial`, `hyperparameters`, `status`, the metrics and `model_artifact`."""
    best = best_of(trials, plan)
    return {
        "status": "Stopped" if stopped else ("Completed" if best is not None else "Failed"), "tuning_job": name,
        "mode": mode, "search": plan.search, "objective": {"metric": plan.objective, "type": plan.objective_type},
        "trials": [{"trial": t["trial"], "hyperparameters": t["hyperparameters"], "status": t["status"],
                    **{k: _number(t.get(k)) for k in ("val_loss", "val_acc", "test_acc")},
                    "wall_seconds": t.get("wall_seconds"), **{key: t[key] for key in TRIAL_EXTRAS if key in t}}
                   for t in trials],
        "best": None if best is None else {
            "trial": best["trial"], "hyperparameters": best["hyperparameters"], "val_loss": _number(best.get("val_loss")),
            "val_acc": _number(best.get("val_acc")), "model_artifact": best.get("model_artifact"),
            **({"training_job": best["training_job"]} if "training_job" in best else {})},
        "wall_seconds": wall_seconds, "folder": str(folder)}


def shown_value(value, kind: str) -> str:
    """A hyperparameter as the table shows it: a continuous value to 4 significant digits
    (`0.001235`, `1.235e-05`; the summary keeps every digit), anything else as given."""
    if kind == CONTINUOUS and not isinstance(value, bool):
        with contextlib.suppress(TypeError, ValueError):
            if math.isfinite(number := float(value)):
                return f"{number:.4g}"
    return str(value)


def table(result: dict, plan: Plan) -> str:
    """The trials as an aligned text table, best objective first (trials without one last)."""
    names = [r.name for r in plan.ranges]
    kinds = {r.name: r.kind for r in plan.ranges}
    best = (result.get("best") or {}).get("trial")
    header = ["trial", "status", "val_loss", "val_acc", "wall s", *names]
    rows = [[f"{t['trial']}{'*' if t['trial'] == best else ''}", t["status"], fmt(t.get("val_loss"), "{:.4f}"),
             fmt(t.get("val_acc"), "{:.4f}"), fmt(t.get("wall_seconds"), "{:.1f}"),
             *(shown_value(t["hyperparameters"][n], kinds[n]) if n in t["hyperparameters"] else "-" for n in names)]
            for t in sorted(result["trials"], key=_ranking(plan))]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [header, ["-" * w for w in widths], *rows]]
    lines.append(f"sorted by {plan.objective} ({plan.objective_type.lower()}d); * the best trial")
    return "\n".join(line.rstrip() for line in lines)


def figure(result: dict, plan: Plan):
    """The objective per completed trial with the best so far, and against each tuned hyperparameter, as a
    matplotlib Figure (no pyplot: a notebook's backend is left as it was)."""
    from matplotlib.figure import Figure

    metric = plan.objective
    scored = sorted((t for t in result["trials"] if t["status"] == "Completed" and t.get(metric) is not None),
                    key=lambda t: t["trial"])
    panels = 1 + len(plan.ranges)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.5 * columns, 3.6 * rows))
    first, *flat = fig.subplots(rows, columns, squeeze=False).flat
    xs = list(range(len(scored)))
    values = [t[metric] for t in scored]
    first.plot(xs, values, "o", label="trial")
    first.step(xs, list(itertools.accumulate(values, min if plan.objective_type == "Minimize" else max)), where="post",
               label="best so far")
    first.set_xticks(xs, [str(t["trial"]) for t in scored], fontsize=7)
    first.set(xlabel="trial (completed)", ylabel=metric, title=f"{metric} per trial ({plan.objective_type.lower()})")
    first.legend(fontsize=8)
    for ax, r in zip(flat, plan.ranges):
        raw = [t["hyperparameters"].get(r.name) for t in scored]
        if r.kind == CATEGORICAL:
            ax.plot([r.values.index(v) if v in r.values else -1 for v in raw], values, "o")
            ax.set_xticks(range(len(r.values)), list(r.values), fontsize=7, rotation=20)
        else:
            ax.plot([float(v) for v in raw], values, "o")
            if r.log:
                ax.set_xscale("log")
                _few_log_ticks(ax)
        ax.set(xlabel=r.name, ylabel=metric)
    for ax in flat[len(plan.ranges):]:
        ax.axis("off")
    fig.suptitle(f"tuning {result['tuning_job']}: {len(scored)} of {len(result['trials'])} trials completed", fontsize=10)
    fig.tight_layout()
    return fig


def _few_log_ticks(ax) -> None:
    """At most MAX_LOG_TICKS labelled ticks on a log x axis, written plainly (`0.001`, `1e-05`): matplotlib
    labels the minor ticks too when the data span about a decade or less, and those labels overlap."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    low, high = sorted(ax.get_xlim())
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in LOG_TICK_SUBS:
        ticks = [m * 10.0 ** e for e in decades for m in subs if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 2:
            break
    else:  # a sliver of a decade: evenly spaced values
        ticks = [t for t in MaxNLocator(nbins=3).tick_values(low, high) if low <= t <= high]
    ax.xaxis.set_major_locator(FixedLocator(ticks[::math.ceil(len(ticks) / MAX_LOG_TICKS)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=7)


def write(folder: Path, result: dict, plan: Plan) -> None:
    """Write tuning.json and tuning.png into `folder` whole, recorded as this command's files."""
    with writing(folder, [SUMMARY_FILE, PICTURE_FILE], "--out", ROLE) as writer:
        writer.write_text(SUMMARY_FILE, json.dumps(result, indent=2) + "\n")
        writer.write(PICTURE_FILE, lambda tmp: figure(result, plan).savefig(tmp, format="png", dpi=100))

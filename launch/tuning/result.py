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

import json
import math
import secrets
import time
from pathlib import Path

from launch.records.report import fmt
from launch.tuning.space import CATEGORICAL, CONTINUOUS, Plan

SUMMARY_FILE = "tuning.json"
PICTURE_FILE = "tuning.png"
ROLE = "tune"  # the command that writes these files, in the folder's record (titanic_lightning.io.outputs)

TUNING_BASE = "titanic-tune"  # short: SageMaker's tuning job names have at most 32 characters


def tuning_name() -> str:
    """`titanic-tune-<YYmmdd-HHMMSS>-<4 random hex digits>`: 31 characters, a valid tuning job name,
    and two tunings started in the same second get different ones."""
    return f"{TUNING_BASE}-{time.strftime('%y%m%d-%H%M%S')}-{secrets.token_hex(2)}"



def _number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def best_of(trials: list[dict], plan: Plan) -> dict | None:
    scored = [t for t in trials if t["status"] == "Completed" and _number(t.get(plan.objective)) is not None]
    if not scored:
        return None
    sign = 1 if plan.objective_type == "Minimize" else -1
    return min(scored, key=lambda t: (sign * t[plan.objective], str(t["trial"])))


TRIAL_EXTRAS = ("job_name", "training_job", "instance_type", "instance_count", "training_seconds", "billable_seconds",
                "estimated_cost_usd", "model_artifact")


def summary(name: str, mode: str, plan: Plan, trials: list[dict], wall_seconds: float, folder: Path,
            stopped: bool) -> dict:
    """The summary object; `trials` hold `trial`, `hyperparameters`, `status`, the metrics and `model_artifact`."""
    best = best_of(trials, plan)
    status = "Stopped" if stopped else ("Completed" if best is not None else "Failed")
    return {
        "status": status,
        "tuning_job": name,
        "mode": mode,
        "search": plan.search,
        "objective": {"metric": plan.objective, "type": plan.objective_type},
        # Beyond the required keys, what `--compare` shows of a trial: its run's name, test accuracy,
        # instances, times and cost, where the trial has them.
        "trials": [{"trial": t["trial"], "hyperparameters": t["hyperparameters"], "status": t["status"],
                    "val_loss": _number(t.get("val_loss")), "val_acc": _number(t.get("val_acc")),
                    "test_acc": _number(t.get("test_acc")), "wall_seconds": t.get("wall_seconds"),
                    **{key: t[key] for key in TRIAL_EXTRAS if key in t}}
                   for t in trials],
        "best": None if best is None else {
            "trial": best["trial"], "hyperparameters": best["hyperparameters"], "val_loss": _number(best.get("val_loss")),
            "val_acc": _number(best.get("val_acc")), "model_artifact": best.get("model_artifact"),
            **({"training_job": best["training_job"]} if "training_job" in best else {})},
        "wall_seconds": wall_seconds,
        "folder": str(folder),
    }


def shown_value(value, kind: str) -> str:
    """A hyperparameter as the table shows it: a continuous value to 4 significant digits
    (`0.001235`, `1.235e-05`; the summary keeps every digit), anything else as given."""
    if kind == CONTINUOUS and not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value)
        if math.isfinite(number):
            return f"{number:.4g}"
    return str(value)


def table(result: dict, plan: Plan) -> str:
    """The trials as an aligned text table, best objective first (trials without one last)."""
    sign = 1 if plan.objective_type == "Minimize" else -1
    names = [r.name for r in plan.ranges]
    kinds = {r.name: r.kind for r in plan.ranges}

    def key(t):
        value = t.get(plan.objective)
        return (value is None, sign * value if value is not None else 0.0, str(t["trial"]))

    best = (result.get("best") or {}).get("trial")
    header = ["trial", "status", "val_loss", "val_acc", "wall s", *names]
    rows = []
    for t in sorted(result["trials"], key=key):
        mark = "*" if t["trial"] == best else ""
        values = t["hyperparameters"]
        rows.append([f"{t['trial']}{mark}", t["status"], fmt(t.get("val_loss"), "{:.4f}"), fmt(t.get("val_acc"), "{:.4f}"),
                     fmt(t.get("wall_seconds"), "{:.1f}"),
                     *(shown_value(values[n], kinds[n]) if n in values else "-" for n in names)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in [header, ["-" * w for w in widths], *rows]]
    lines.append(f"sorted by {plan.objective} ({plan.objective_type.lower()}d); * the best trial")
    return "\n".join(line.rstrip() for line in lines)



def draw(result: dict, plan: Plan, target: Path) -> None:
    """tuning.png: `figure`, saved as a PNG into `target`."""
    figure(result, plan).savefig(target, format="png", dpi=100)


def figure(result: dict, plan: Plan):
    """The objective per trial with the best-so-far line, and the objective against each tuned
    hyperparameter (completed trials; a categorical one by category), as a matplotlib Figure.

    Drawn with matplotlib's object interface, not pyplot: a notebook's backend is left as it was."""
    from matplotlib.figure import Figure

    metric, sign = plan.objective, (1 if plan.objective_type == "Minimize" else -1)
    scored = [t for t in result["trials"] if t["status"] == "Completed" and t.get(metric) is not None]
    panels = 1 + len(plan.ranges)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(4.5 * columns, 3.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    flat = list(axes.flat)
    ax = flat[0]
    order = sorted(scored, key=lambda t: _order(t["trial"]))
    xs = list(range(len(order)))
    values = [t[metric] for t in order]
    ax.plot(xs, values, "o", label="trial")
    best_so_far, current = [], None
    for v in values:
        current = v if current is None or sign * v < sign * current else current
        best_so_far.append(current)
    ax.step(xs, best_so_far, where="post", label="best so far")
    ax.set_xticks(xs, [str(t["trial"]) for t in order], fontsize=7)
    ax.set_xlabel("trial (completed)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial ({plan.objective_type.lower()})")
    ax.legend(fontsize=8)
    for ax, r in zip(flat[1:], plan.ranges):
        raw = [t["hyperparameters"].get(r.name) for t in scored]
        ys = [t[metric] for t in scored]
        if r.kind == CATEGORICAL:
            positions = {v: i for i, v in enumerate(r.values)}
            ax.plot([positions.get(v, -1) for v in raw], ys, "o")
            ax.set_xticks(range(len(r.values)), list(r.values), fontsize=7, rotation=20)
        else:
            ax.plot([float(v) for v in raw], ys, "o")
            if r.log:
                ax.set_xscale("log")
                _few_log_ticks(ax)
        ax.set_xlabel(r.name)
        ax.set_ylabel(metric)
    for ax in flat[panels:]:
        ax.axis("off")
    fig.suptitle(f"tuning {result['tuning_job']}: {len(scored)} of {len(result['trials'])} trials completed", fontsize=10)
    fig.tight_layout()
    return fig


# Tick positions within a decade, coarsest first; the first set that puts at least 2 ticks in view is used.
LOG_TICK_SUBS = ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(x / 10 for x in range(10, 100, 2)))
MAX_LOG_TICKS = 5


def _few_log_ticks(ax) -> None:
    """At most MAX_LOG_TICKS labelled ticks on a log x axis, written plainly (`0.001`, `1e-05`).

    Matplotlib's log formatter labels the minor ticks too when the data span less than a decade or
    so, and those long `1.4×10^-3` labels run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

    low, high = sorted(ax.get_xlim())
    ticks: list[float] = []
    for subs in LOG_TICK_SUBS:
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
                 for m in subs if low <= m * 10.0 ** e <= high]
        if len(ticks) >= 2:
            break
    if len(ticks) < 2:  # a sliver of a decade: evenly spaced values
        ticks = [t for t in MaxNLocator(nbins=3).tick_values(low, high) if low <= t <= high]
    step = math.ceil(len(ticks) / MAX_LOG_TICKS)
    ax.xaxis.set_major_locator(FixedLocator(ticks[::step]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.4g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=7)


def _order(trial) -> tuple:
    return (0, trial, "") if isinstance(trial, int) else (1, 0, str(trial))


def write(folder: Path, result: dict, plan: Plan) -> tuple[Path, Path]:
    """Write tuning.json and tuning.png into `folder` whole, recorded as this command's files."""
    from titanic_lightning.io.outputs import writing

    with writing(folder, [SUMMARY_FILE, PICTURE_FILE], "--out", ROLE) as writer:
        summary_path = writer.write_text(SUMMARY_FILE, json.dumps(result, indent=2) + "\n")
        picture_path = writer.write(PICTURE_FILE, lambda tmp: draw(result, plan, tmp))
    return summary_path, picture_path

"""The comparison of runs as a picture (`--compare ... --plot compare.png`, `Comparison.plot`): a bar
chart per quantity — wall time, cost, validation and test accuracy — with a bar per run. Accuracy
axes are zoomed to the accuracies drawn; long run names are shortened. A local run's cost is its
`emulated_cost_usd`, hatched and marked `~`; a run with no figure for a quantity has no bar there.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import check_output_file, writing

ROLE = "compare"
FORMATS = ("png", "svg", "pdf")
NAME_CHARS = 32  # the longest run name drawn whole; the table beside the picture names every run in full
ACCURACY_MARGIN = 0.5  # around the accuracies drawn, as a fraction of their spread (at least 0.02)


def check_plot_path(path) -> Path:
    """`path` may be written: a .png/.svg/.pdf name, absent or a picture this command wrote there."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"--plot {path}: give a file name ending in .png, .svg or .pdf")
    return check_output_file(path, "--plot", ROLE)


def _value(record: dict, key: str, most: float = math.inf) -> float | None:
    """A drawable figure: a finite number from 0 to `most` (anything else in a file gets no bar)."""
    value = record.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= most:
        return float(value)
    return None


def short_names(names: list[str]) -> list[str]:
    """Run names for the picture: a name over NAME_CHARS characters loses the part it shares with every
    other run (`titanic-lightning-`), then its middle; names that would then coincide stay whole."""
    common = os.path.commonprefix(names) if len(set(names)) > 1 else ""
    cut = max(common.rfind("-"), common.rfind("/")) + 1  # at a separator, so words stay whole
    shown = []
    for short in names:
        if len(short) > NAME_CHARS and 0 < cut < len(short):
            short = "…" + short[cut:]
        if len(short) > NAME_CHARS:
            head = (NAME_CHARS - 1) // 2
            short = short[:head] + "…" + short[len(short) - (NAME_CHARS - 1 - head):]
        shown.append(short)
    return shown if len(set(shown)) == len(set(names)) else list(names)


def accuracy_limits(values: list[float | None]) -> tuple[float, float]:
    """The axis of an accuracy panel (from 0 to 1, runs a point apart would look alike): ACCURACY_MARGIN
    of the values' spread below the lowest to that above the highest, plus room for each bar's label."""
    drawn = [v for v in values if v is not None]
    if not drawn:
        return 0.0, 1.0
    low, high = min(drawn), max(drawn)
    margin = ACCURACY_MARGIN * max(high - low, 0.02)
    return max(0.0, low - margin), high + 2 * margin


def figure(records: list[dict]):
    """The comparison as a matplotlib Figure, not shown (no pyplot: a notebook's backend is left alone)."""
    from matplotlib.figure import Figure

    names = [str(r.get("job_name")) for r in records]
    costs = [_value(r, "estimated_cost_usd") for r in records]
    estimated = [c is None and _value(r, "emulated_cost_usd") is not None for c, r in zip(costs, records)]
    costs = [_value(r, "emulated_cost_usd") if guess else c for c, r, guess in zip(costs, records, estimated)]
    none = [False] * len(records)
    panels = [  # (title, axis label, value per run, estimated per run)
        ("Wall time", "seconds", [_value(r, "wall_seconds") for r in records], none),
        ("Cost", "USD (hatched: local, estimated)", costs, estimated),
        ("Validation accuracy", "val_acc", [_value(r, "val_acc", most=1.0) for r in records], none),
        ("Test accuracy", "test_acc", [_value(r, "test_acc", most=1.0) for r in records], none),
    ]
    fig = Figure(figsize=(4 * len(panels), 1.5 + 0.45 * max(3, len(names))), constrained_layout=True)
    axes = fig.subplots(1, len(panels), sharey=True)
    positions = list(range(len(names)))
    for ax, (title, label, values, guesses) in zip(axes, panels):
        accuracy = title.endswith("accuracy")
        limits = accuracy_limits(values) if accuracy else (0.0, max([v for v in values if v is not None] or [1.0]) * 1.3 or 1.0)
        bars = ax.barh(positions, [v if v is not None else 0.0 for v in values], color="tab:blue")
        for bar, value, guess in zip(bars, values, guesses):
            middle = bar.get_y() + bar.get_height() / 2
            if value is None:
                bar.set_visible(False)
                ax.annotate("-", (limits[0], middle), va="center", xytext=(3, 0), textcoords="offset points")
                continue
            if guess:
                bar.set(hatch="//", facecolor="white", edgecolor="tab:blue")
            text = f"{value:.4f}" if title != "Wall time" else f"{value:.1f}"
            ax.annotate(("~" if guess else "") + text, (value, middle), va="center", xytext=(3, 0),
                        textcoords="offset points", fontsize=8)
        ax.set_xlim(*limits)
        ax.set(title=title, xlabel=label + (" (zoomed)" if accuracy else ""))
    axes[0].set_yticks(positions, short_names(names))
    axes[0].invert_yaxis()  # first run on top, as in the table
    return fig


def plot(records: list[dict], path) -> Path:
    """Draw `records` into `path` (checked first; written whole, never over a file this command did not write)."""
    path = check_plot_path(path)
    fig = figure(records)
    with writing(path.parent, [path.name], "--plot", ROLE) as files:
        return files.write(path.name, lambda tmp: fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=100))

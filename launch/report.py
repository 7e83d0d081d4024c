"""After a job: the summary (status, times, cost, artifact, final metrics), `runs/<job>.json`, and
`--compare runs/*.json`, one table across runs (the lesson's CPU vs GPU vs 2-instance comparison).

DescribeTrainingJob's `BillableTimeInSeconds` is per instance; what is billed is that × the instance
count (`billable_instance_seconds`, the figure the SDK's "Billable seconds:" log line prints).
Cost = billable instance-seconds × on-demand hourly price / 3600 (see `prices`).
Spot saving = 1 − billable / training seconds, the formula AWS documents.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from launch.prices import PriceTable
from titanic_lightning.contracts import COMPARED_METRICS
from titanic_lightning.errors import UsageError

COLUMNS = (
    ("job", "job_name", "{}"),
    ("instance", "instance_type", "{}"),
    ("n", "instance_count", "{}"),
    ("spot", "spot", "{}"),
    ("status", "status", "{}"),
    ("wall s", "wall_seconds", "{:.1f}"),
    ("training s", "training_seconds", "{:.0f}"),
    ("billable s", "billable_seconds", "{:.0f}"),
    ("billed inst-s", "billable_instance_seconds", "{:.0f}"),
    ("cost USD", "estimated_cost_usd", "{:.4f}"),
    *((name, name, "{:.4f}") for name in COMPARED_METRICS),
)


def _seconds(start, end) -> float | None:
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds(), 1)
    return None


def summarize(description: dict, prices: PriceTable, wall_seconds: float | None) -> dict:
    """A describe_training_job answer → the run record printed and saved."""
    resources = description.get("ResourceConfig", {})
    instance_type = resources.get("InstanceType")
    count = int(resources.get("InstanceCount") or 1)
    training = description.get("TrainingTimeInSeconds")
    billable = description.get("BillableTimeInSeconds")
    spot = bool(description.get("EnableManagedSpotTraining"))
    saving = None
    if spot and training and billable is not None:
        saving = round(100.0 * (1.0 - billable / training), 1)
    metrics = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", []) or []}
    return {
        "job_name": description.get("TrainingJobName"),
        "status": description.get("TrainingJobStatus"),
        "failure_reason": description.get("FailureReason"),
        "instance_type": instance_type,
        "instance_count": count,
        "spot": spot,
        "training_seconds": training,
        "billable_seconds": billable,  # per instance, as DescribeTrainingJob reports it
        "billable_instance_seconds": billable * count if billable is not None else None,
        "spot_saving_percent": saving,
        "wall_seconds": wall_seconds if wall_seconds is not None else _seconds(
            description.get("CreationTime"), description.get("TrainingEndTime")),
        "usd_per_hour": prices.hourly(instance_type) if instance_type else None,
        "estimated_cost_usd": prices.job_cost(instance_type, count, billable) if instance_type else None,
        "prices_as_of": prices.as_of,
        "model_artifact": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        "final_metrics": metrics,
        **{name: metrics.get(name) for name in COMPARED_METRICS},
    }


def human(record: dict) -> str:
    lines = [
        f"job {record['job_name']}: {record['status']}"
        + (f" ({record['failure_reason']})" if record.get("failure_reason") else ""),
        f"  instances:        {record['instance_count']} x {record['instance_type']}" + (" (spot)" if record["spot"] else ""),
        f"  wall time:        {_fmt(record['wall_seconds'], '{:.1f}')} s",
        f"  training time:    {_fmt(record['training_seconds'], '{:.0f}')} s",
        f"  billable time:    {_fmt(record['billable_seconds'], '{:.0f}')} s per instance, "
        f"{_fmt(record.get('billable_instance_seconds'), '{:.0f}')} instance-seconds billed"
        + (f" (spot saving {record['spot_saving_percent']}%)" if record.get("spot_saving_percent") is not None else ""),
        f"  estimated cost:   {_fmt(record['estimated_cost_usd'], '${:.4f}')}"
        f" (on-demand prices as of {record['prices_as_of']})",
        f"  model artifact:   {record['model_artifact']}",
        "  final metrics:    " + (", ".join(f"{k}={v:.4f}" for k, v in sorted(record["final_metrics"].items())) or "-"),
    ]
    return "\n".join(lines)


def _fmt(value, pattern: str) -> str:
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def save(record: dict, runs_dir: Path) -> Path:
    """Write runs/<job>.json whole (temp file, then rename)."""
    from titanic_lightning.atomic import write_text

    runs_dir.mkdir(parents=True, exist_ok=True)
    return write_text(runs_dir / f"{record['job_name']}.json", json.dumps(record, indent=2, default=str) + "\n")


def load_runs(paths: list[str]) -> list[dict]:
    if not paths:
        raise UsageError("--compare needs run files, e.g. --compare runs/*.json")
    records = []
    for name in paths:
        path = Path(name)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise UsageError(f"--compare {path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--compare {path}: not valid JSON ({exc})") from None
        if not isinstance(record, dict) or "job_name" not in record:
            raise UsageError(f"--compare {path}: not a run record written by launch/submit.py")
        records.append(record)
    return records


def compare_table(records: list[dict]) -> str:
    """One aligned text table, a row per run, in the order given."""
    header = [title for title, _, _ in COLUMNS]
    rows = [[_fmt(r.get(key), pattern) for _, key, pattern in COLUMNS] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    numeric = {i for i, (_, key, _) in enumerate(COLUMNS) if key not in ("job_name", "instance_type", "status", "spot")}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])

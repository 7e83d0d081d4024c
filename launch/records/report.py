"""The run record (status, times, cost, artifact, final metrics), `runs/<job>.json`: one shape (`KEYS`, then
its mode's own) for every run, `mode` saying where it ran: `"sagemaker"` (`summarize`), `"local"`
(`local_record`), `"slurm"` (`launch.jobs.slurm.record`) or `"tuning"` (`tuning_records`).

DescribeTrainingJob's `BillableTimeInSeconds` is per instance; what is billed is that × the instance
count (`billable_instance_seconds`, the figure of the SDK's "Billable seconds:" log line). Cost =
billable instance-seconds × on-demand hourly price / 3600; spot saving = 1 − billable / training
seconds, the formula AWS documents. A local run is billed nothing: its `emulated_cost_usd` is what
its wall time would cost on the emulated instance type (a rough guide; tables show it as `~0.0012`).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from launch.jobs.prices import PriceTable
from titanic_lightning.contracts import COMPARED_METRICS, FINAL_LINE
from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import writing

MODES = ("sagemaker", "local", "slurm", "tuning")
KEYS = ("mode", "job_name", "status", "failure_reason", "instance_type", "instance_count", "spot", "training_seconds",
        "billable_seconds", "billable_instance_seconds", "spot_saving_percent", "wall_seconds", "usd_per_hour",
        "estimated_cost_usd", "emulated_cost_usd", "prices_as_of", "model_artifact", "final_metrics",
        *COMPARED_METRICS)


def new_record(final: dict, prices: PriceTable | None = None, **values) -> dict:
    """A run record: every key of `KEYS` (None unless given), the final metrics `final` (each of `COMPARED_METRICS`
    also at the top level), the hourly price of its instance type from `prices`, and `values`' other keys after."""
    record = dict.fromkeys(KEYS)
    if prices is not None:
        instance_type = values.get("instance_type")
        record.update(usd_per_hour=prices.hourly(instance_type) if isinstance(instance_type, str) else None,
                      prices_as_of=prices.as_of)
    record.update(values, final_metrics=final, **{name: final.get(name) for name in COMPARED_METRICS})
    return record


def summarize(description: dict, prices: PriceTable, wall_seconds: float | None) -> dict:
    """A describe_training_job answer → the run record printed and saved."""
    resources = description.get("ResourceConfig", {})
    instance_type = resources.get("InstanceType")
    count = int(resources.get("InstanceCount") or 1)
    training = description.get("TrainingTimeInSeconds")
    billable = description.get("BillableTimeInSeconds")  # per instance
    spot = bool(description.get("EnableManagedSpotTraining"))
    saving = round(100.0 * (1.0 - billable / training), 1) if spot and training and billable is not None else None
    start, end = description.get("CreationTime"), description.get("TrainingEndTime")
    if wall_seconds is None and isinstance(start, datetime) and isinstance(end, datetime):
        wall_seconds = round((end - start).total_seconds(), 1)
    return new_record(
        {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", []) or []}, prices,
        mode="sagemaker", job_name=description.get("TrainingJobName"), status=description.get("TrainingJobStatus"),
        failure_reason=description.get("FailureReason"), instance_type=instance_type, instance_count=count, spot=spot,
        training_seconds=training, billable_seconds=billable,
        billable_instance_seconds=billable * count if billable is not None else None,
        spot_saving_percent=saving, wall_seconds=wall_seconds,
        estimated_cost_usd=prices.job_cost(instance_type, count, billable) if instance_type else None,
        model_artifact=(description.get("ModelArtifacts") or {}).get("S3ModelArtifacts"))


def human(record: dict) -> str:
    """The record as the lines a command prints when a job ends."""
    lines = [f"job {record['job_name']}: {record['status']}"
             + (f" ({record['failure_reason']})" if record.get("failure_reason") else "")]
    slurm = record.get("mode") == "slurm"  # nothing billed per instance: the nodes, and SLURM's restarts
    if slurm:
        lines.append(f"  nodes:            {record['instance_count']} x {record['tasks_per_node']} task(s) on "
                     f"{record['instance_type']}, {record['gpus_per_node']} GPU(s) per node; restarts {record['restarts']}")
    else:
        lines.append(f"  instances:        {record['instance_count']} x {record['instance_type']}"
                     + (" (spot)" if record["spot"] else ""))
    lines += [f"  wall time:        {fmt(record['wall_seconds'], '{:.1f}')} s",
              f"  training time:    {fmt(record['training_seconds'], '{:.1f}' if slurm else '{:.0f}')} s"]
    if not slurm:
        if record.get("estimated_cost_usd") is None and record.get("emulated_cost_usd") is not None:
            cost = (f"nothing billed; ~{fmt(record['emulated_cost_usd'], '${:.4f}')} for this wall time on "
                    f"{record['instance_count']} x {record['instance_type']}")
        else:
            cost = fmt(record.get("estimated_cost_usd"), "${:.4f}")
        lines += [
            f"  billable time:    {fmt(record['billable_seconds'], '{:.0f}')} s per instance, "
            f"{fmt(record.get('billable_instance_seconds'), '{:.0f}')} instance-seconds billed"
            + (f" (spot saving {record['spot_saving_percent']}%)" if record.get("spot_saving_percent") is not None else ""),
            f"  estimated cost:   {cost} (on-demand prices as of {record['prices_as_of']})"]
    lines += [f"  model artifact:   {record['model_artifact']}",
              "  final metrics:    " + (", ".join(f"{k}={v:.4f}" for k, v in sorted(record["final_metrics"].items()))
                                        or "-")]
    return "\n".join(lines)


def fmt(value, pattern: str) -> str:
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def save(record: dict, runs_dir: Path) -> Path:
    """Write runs/<job>.json whole, never over a file this project did not write (`titanic_lightning.io.outputs`)."""
    name = f"{record['job_name']}.json"
    with writing(runs_dir, [name], "--runs-dir", "record", wait_s=60) as files:
        return files.write_text(name, json.dumps(record, indent=2, default=str) + "\n")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _emulated_cost(prices: PriceTable, instance_type, count, wall_seconds) -> float | None:
    if not isinstance(instance_type, str) or not _number(wall_seconds) or not _number(count):
        return None
    return prices.job_cost(instance_type, int(count), wall_seconds)


def local_record(summary: dict, prices: PriceTable) -> dict:
    """The emulator's summary (`jobs/<job>/summary.json`) → the run record, `mode` "local"; the hosts'
    wall time stands for both the wall and the training seconds, and nothing is billed."""
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    instance_type, wall = summary.get("instance_type"), summary.get("wall_seconds")
    count = summary.get("instance_count") or 1
    return new_record(
        {name: metrics[name] for name in FINAL_LINE if _number(metrics.get(name))}, prices, mode="local",
        job_name=summary.get("job_name"), status=summary.get("status"), failure_reason=summary.get("failure_reason"),
        instance_type=instance_type, instance_count=count, spot=bool(summary.get("spot")), training_seconds=wall,
        wall_seconds=wall, emulated_cost_usd=_emulated_cost(prices, instance_type, count, wall),
        model_artifact=summary.get("model_artifact"), job_dir=summary.get("job_dir"),
        hyperparameters=summary.get("hyperparameters"))


def tuning_records(result: dict, prices: PriceTable, source: str) -> list[dict]:
    """A tuning result (`launch.tuning.result`) → a record per trial, `<tuning_job>/trial-<n>`, `mode` "tuning";
    a trial that ran here (its `mode`, else the result's, is "local") gets an `emulated_cost_usd` as a local run."""
    trials = result.get("trials")
    if not isinstance(trials, list) or not all(isinstance(t, dict) and "trial" in t for t in trials):
        raise UsageError(f"{source}: `trials` is not a list of objects with a `trial` number")
    records = []
    for trial in trials:
        instance_type, count = trial.get("instance_type"), trial.get("instance_count") or 1
        billable, wall = trial.get("billable_seconds"), trial.get("wall_seconds")
        ran_here = (trial.get("mode") or result.get("mode")) == "local"
        records.append(new_record(
            {name: trial[name] for name in (*FINAL_LINE, "val_loss") if _number(trial.get(name))}, prices,
            mode="tuning", job_name=f"{result.get('tuning_job')}/trial-{trial['trial']}",
            status=trial.get("status"), failure_reason=trial.get("failure_reason"), instance_type=instance_type,
            instance_count=trial.get("instance_count"), spot=trial.get("spot"),
            training_seconds=trial.get("training_seconds"), billable_seconds=billable,
            billable_instance_seconds=billable * count if _number(billable) and _number(count) else None,
            wall_seconds=wall, estimated_cost_usd=trial.get("estimated_cost_usd"),
            emulated_cost_usd=_emulated_cost(prices, instance_type, count, wall) if ran_here else None,
            model_artifact=trial.get("model_artifact"), tuning_job=result.get("tuning_job"), trial=trial["trial"],
            training_job_name=trial.get("job_name"), hyperparameters=trial.get("hyperparameters")))
    return records

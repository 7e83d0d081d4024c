"""The comparison of runs (`--compare`, `launch.compare`): every shape `--compare` accepts read as
run records (`load_runs` for files, `as_records` for an object in memory: run records, a local job's
summary.json, tuning results), and one aligned table across them (the lesson's CPU vs GPU vs
2-instance comparison)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

from launch.jobs.prices import PriceTable
from launch.records.report import MODES, fmt, local_record, tuning_records
from titanic_lightning.contracts import COMPARED_METRICS
from titanic_lightning.errors import UsageError

COLUMNS = (
    ("job", "job_name", "{}"),
    ("mode", "mode", "{}"),
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


def as_records(data, source: str, prices: PriceTable | None = None) -> list[dict]:
    """Whatever `--compare` accepts, already parsed → run records: a run record (returned as it is,
    `val_acc`/`test_acc` filled from its final metrics), a local job's summary.json, or a tuning
    result (a record per trial). `source` names the data in errors (`--compare runs/x.json`)."""
    from launch.jobs import prices as price_tables

    table = prices if prices is not None else price_tables.load()
    if isinstance(data, dict) and "tuning_job" in data and "trials" in data:
        return tuning_records(data, table, source)
    if isinstance(data, dict) and "job_name" in data and "hosts" in data and "job_dir" in data and "mode" not in data:
        return [local_record(data, table)]
    if isinstance(data, dict) and "job_name" in data and (data.get("mode") in MODES or "billable_seconds" in data):
        record = {"mode": "sagemaker", **data}  # records written before `mode` were all SageMaker's
        final = record.get("final_metrics") if isinstance(record.get("final_metrics"), dict) else {}
        for name in COMPARED_METRICS:
            if record.get(name) is None:
                record[name] = final.get(name)
        return [record]
    raise UsageError(f"{source}: not a run record (runs/*.json), a local job's summary.json or a tuning result")


def expand(paths, flag: str = "--compare") -> list[Path]:
    """Files as given; a name with * ? or [ that is no file is a pattern, expanded in sorted order."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = []
    for name in paths:
        text = str(name)
        if any(c in text for c in "*?[") and not Path(text).exists():
            matched = sorted(glob.glob(text))
            if not matched:
                raise UsageError(f"{flag} {text}: no file matches")
            files.extend(Path(m) for m in matched)
        else:
            files.append(Path(text))
    return files


def load_runs(paths, prices: PriceTable | None = None, flag: str = "--compare") -> list[dict]:
    """The run records in `paths` (runs/*.json, jobs/<job>/summary.json, tuning results), in order."""
    files = expand(paths, flag)
    if not files:
        raise UsageError(f"{flag} needs run files, e.g. {flag} runs/*.json")
    records = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"{flag} {path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{flag} {path}: is a folder; give its JSON files") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise UsageError(f"{flag} {path}: not valid JSON ({exc})") from None
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot be read: {exc.strerror or exc}") from None
        found = as_records(data, f"{flag} {path}", prices)
        if not found:
            raise UsageError(f"{flag} {path}: holds no runs (a tuning result with no trials)")
        records.extend(found)
    return distinct(records)


def _identity(record: dict):
    """The run a record describes: a tuning result's row names its trial's training job, which the
    trial's own record (runs/<tuning>-<n>.json) calls `job_name`; a local job's summary.json and its
    runs/<job>.json share the job name."""
    return record.get("training_job_name") or record.get("job_name")


def distinct(records: list[dict]) -> list[dict]:
    """Each run once, at its first place: `runs/*.json jobs/*/summary.json tuning/*/tuning.json`
    describes most runs twice. A later record of the same run fills the columns the first left empty."""
    kept: dict = {}
    rows = []
    for record in records:
        key = _identity(record)
        if key is None:
            rows.append(record)
        elif key in kept:
            first = kept[key]
            first.update({k: v for k, v in record.items() if first.get(k) is None and v is not None})
        else:
            kept[key] = dict(record)
            rows.append(kept[key])
    return rows


COST_ESTIMATE_NOTE = ("~ a local run: the cost of its wall time on the emulated instance type at on-demand prices "
                      "(nothing was billed)")


def _cell(record: dict, key: str, pattern: str) -> str:
    if key == "estimated_cost_usd" and record.get(key) is None and record.get("emulated_cost_usd") is not None:
        return "~" + fmt(record["emulated_cost_usd"], pattern)
    return fmt(record.get(key), pattern)


def compare_table(records: list[dict]) -> str:
    """One aligned text table, a row per run, in the order given."""
    header = [title for title, _, _ in COLUMNS]
    rows = [[_cell(r, key, pattern) for _, key, pattern in COLUMNS] for r in records]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]
    text = {"job_name", "mode", "instance_type", "status", "spot"}
    numeric = {i for i, (_, key, _) in enumerate(COLUMNS) if key not in text}

    def line(cells):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    cost = [title for title, key, _ in COLUMNS].index("cost USD")
    if any(row[cost].startswith("~") for row in rows):
        lines.append(COST_ESTIMATE_NOTE)
    return "\n".join(lines)

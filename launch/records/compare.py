"""The comparison of runs (`--compare`, `launch.compare`): run records, local jobs' summary.json and
tuning results read as run records (`load_runs` for files, `as_records` for an object in memory),
and one aligned table across them (the lesson's CPU vs GPU vs 2-instance comparison)."""

from __future__ import annotations

import glob
import json
from pathlib import Path

from launch.jobs.prices import PriceTable
from launch.records.report import MODES, fmt, local_record, tuning_records
from titanic_lightning.contracts import COMPARED_METRICS
from titanic_lightning.errors import UsageError

# (title, record key, format) of each column.
COLUMNS = (("job", "job_name", "{}"), ("mode", "mode", "{}"), ("instance", "instance_type", "{}"), ("n", "instance_count", "{}"),
           ("spot", "spot", "{}"), ("status", "status", "{}"), ("wall s", "wall_seconds", "{:.1f}"),
           ("training s", "training_seconds", "{:.0f}"), ("billable s", "billable_seconds", "{:.0f}"),
           ("billed inst-s", "billable_instance_seconds", "{:.0f}"), ("cost USD", "estimated_cost_usd", "{:.4f}"),
           *((name, name, "{:.4f}") for name in COMPARED_METRICS))
TEXT_COLUMNS = ("job_name", "mode", "instance_type", "status", "spot")  # left-aligned; the others right
COST_ESTIMATE_NOTE = ("~ a local run: the cost of its wall time on the emulated instance type at on-demand prices "
                      "(nothing was billed)")


def as_records(data, source: str, prices: PriceTable | None = None) -> list[dict]:
    """Whatever `--compare` accepts, parsed → run records: a run record (`val_acc`/`test_acc` filled from its final
    metrics), a local job's summary.json, or a tuning result (a record per trial); `source` names it in errors."""
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


def expand(paths) -> list[Path]:
    """Files as given; a name with * ? or [ that is no file is a pattern, expanded in sorted order."""
    files = []
    for text in map(str, [paths] if isinstance(paths, (str, Path)) else paths):
        if any(c in text for c in "*?[") and not Path(text).exists():
            matched = sorted(glob.glob(text))
            if not matched:
                raise UsageError(f"--compare {text}: no file matches")
            files.extend(map(Path, matched))
        else:
            files.append(Path(text))
    return files


def load_runs(paths, prices: PriceTable | None = None) -> list[dict]:
    """The run records in `paths` (runs/*.json, jobs/<job>/summary.json, tuning results), in order."""
    files = expand(paths)
    if not files:
        raise UsageError("--compare needs run files, e.g. --compare runs/*.json")
    records = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--compare {path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"--compare {path}: is a folder; give its JSON files") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise UsageError(f"--compare {path}: not valid JSON ({exc})") from None
        except OSError as exc:
            raise UsageError(f"--compare {path}: cannot be read: {exc.strerror or exc}") from None
        found = as_records(data, f"--compare {path}", prices)
        if not found:
            raise UsageError(f"--compare {path}: holds no runs (a tuning result with no trials)")
        records.extend(found)
    return distinct(records)


def distinct(records: list[dict]) -> list[dict]:
    """Each run once, at its first place (`runs/*.json jobs/*/summary.json tuning/*/tuning.json` names most
    twice), a later record of it filling the columns the first left empty. A run is known by its job name; a
    tuning result's row calls its trial's training job `training_job_name`."""
    kept: dict = {}
    rows = []
    for record in records:
        key = record.get("training_job_name") or record.get("job_name")
        if key is None:
            rows.append(record)
        elif key in kept:
            first = kept[key]
            first.update({k: v for k, v in record.items() if first.get(k) is None and v is not None})
        else:
            kept[key] = dict(record)
            rows.append(kept[key])
    return rows


def _estimated(record: dict) -> bool:
    """Billed nothing, with an emulated cost (a local run): shown as `~` that cost."""
    return record.get("estimated_cost_usd") is None and record.get("emulated_cost_usd") is not None


def compare_table(records: list[dict]) -> str:
    """One aligned text table, a row per run, in the order given."""
    header = [title for title, _, _ in COLUMNS]
    rows = [["~" + fmt(r["emulated_cost_usd"], pattern) if key == "estimated_cost_usd" and _estimated(r)
             else fmt(r.get(key), pattern) for _, key, pattern in COLUMNS] for r in records]
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if key in TEXT_COLUMNS else c.rjust(w)
                         for c, w, (_, key, _) in zip(cells, widths, COLUMNS))

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if any(map(_estimated, records)):
        lines.append(COST_ESTIMATE_NOTE)
    return "\n".join(lines)

"""The launcher as Python functions that return result objects (`import launch` shows them in use): build
a job, see what it would run, run it here or on SageMaker, wait for it, compare runs. `python launch/submit.py`
is a command line over these. A mistake in an argument raises `UsageError` before any work starts, with the
line the command line would print (`job_spec(instance_count=0)` → `--instance-count 0: must be at least 1`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from launch.jobs import local as emulator
from launch.jobs import prices as price_tables
from launch.jobs import remote, s3data
from launch.jobs.checks import build_spec, check_job_name
from launch.jobs.prices import PriceTable
from launch.jobs.spec import DEFAULT_MAX_RUN_S, DEFAULT_PREFIX, JobSpec
from launch.options import check_type, hp_pairs, region_or_default
from launch.records import charts, report
from launch.records import compare as compare_runs
from titanic_lightning.errors import UsageError
from titanic_lightning.io.outputs import check_folder

__all__ = ["Comparison", "JobSpec", "Run", "UsageError", "compare", "dry_run", "job_spec", "run_local", "run_sagemaker", "wait"]


def _recorded(key: str, doc: str | None = None) -> property:
    return property(lambda self: self.record.get(key), doc=doc)


@dataclass(frozen=True)
class Run:
    """One training job, run here (`mode` "local"), on SageMaker ("sagemaker") or with SLURM ("slurm"). `record` is
    its run record (`runs/<job>.json`; without waiting, what is known yet: status "Submitted", checkpoint URI,
    uploads); `summary` a local job's full summary (hosts, logs, command, metrics.json)."""

    job_name: str
    status: str
    mode: str
    record: dict = field(repr=False)
    record_path: Path | None = None
    summary: dict | None = field(default=None, repr=False)

    val_acc = _recorded("val_acc")
    test_acc = _recorded("test_acc")
    wall_seconds = _recorded("wall_seconds")
    cost_usd = _recorded("estimated_cost_usd", "The estimated billed cost; None for a local run (`record['emulated_cost_usd']`).")
    model_artifact = _recorded("model_artifact", "model.tar.gz: a local path (what `entry.predict --model` takes) or an S3 URI.")

    @classmethod
    def of(cls, record: dict, record_path: Path | None = None, summary: dict | None = None) -> Run:
        """The Run a run record describes (its name, status and mode)."""
        return cls(record["job_name"], record["status"], record["mode"], record, record_path, summary)

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    @property
    def metrics(self) -> dict:
        """The final metrics (val_* and test_* of the best weights, best_epoch, ...)."""
        return dict(self.record.get("final_metrics") or {})

    @property
    def job_dir(self) -> Path | None:
        """A local job's folder (jobs/<job>/: hosts, logs, artifacts)."""
        return Path(self.summary["job_dir"]) if self.summary and self.summary.get("job_dir") else None


@dataclass(frozen=True, repr=False)
class Comparison:
    """Runs side by side: `rows` (run records, in order), `table` (text), `plot(path)` (a picture)."""

    rows: list[dict]

    @property
    def table(self) -> str:
        return compare_runs.compare_table(self.rows)

    def plot(self, path: str | Path = "compare.png") -> Path:
        """Bar charts of wall time, cost and accuracy per run, written to `path` (.png, .svg or .pdf);
        refused (UsageError) when `path` is a file this launcher did not write."""
        return charts.plot(self.rows, path)

    def figure(self):
        """The same picture as a matplotlib Figure, for a notebook to show or restyle."""
        return charts.figure(self.rows)

    def __repr__(self) -> str:  # a notebook shows the table
        return self.table

    __str__ = __repr__


def job_spec(*, gpu: bool = False, instance_type: str | None = None, instance_count: int = 1, spot: bool = False,
             max_run: int = DEFAULT_MAX_RUN_S, bucket: str | None = None, prefix: str = DEFAULT_PREFIX,
             region: str | None = None, role: str | None = None, hyperparameters: dict | list | None = None,
             strategy: str | None = None, resume: str | None = None, network_isolation: bool = False,
             wheelhouse: bool = False) -> JobSpec:
    """The validated job these options describe, as `submit.py`'s flags of the same names do (offline);
    a `UsageError` names the option at fault. `hyperparameters` are flags of `python -m entry.train`:
    `{"epochs": 20, "learning_rate": 0.003}`, or the command line's `["epochs=20", ...]`. `region` defaults
    to $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1."""
    fn = "job_spec"
    for name, value in (("gpu", gpu), ("spot", spot), ("network_isolation", network_isolation),
                        ("wheelhouse", wheelhouse)):
        check_type(fn, name, value, (bool,), "True or False")
    for name, value in (("instance_count", instance_count), ("max_run", max_run)):
        check_type(fn, name, value, (int,), "an integer")
    for name, value in (("instance_type", instance_type), ("bucket", bucket), ("region", region), ("role", role),
                        ("strategy", strategy), ("resume", resume)):
        check_type(fn, name, value, (str,), "a string", optional=True)
    check_type(fn, "prefix", prefix, (str,), "a string")
    pairs = hp_pairs(fn, hyperparameters)
    return build_spec(gpu=gpu, instance_type=instance_type, instance_count=instance_count, spot=spot, max_run=max_run,
                      bucket=bucket, prefix=prefix, region=region_or_default(region), role=role,
                      hp=pairs, strategy=strategy, resume=resume, network_isolation=network_isolation,
                      wheelhouse=wheelhouse)


def _spec(spec) -> JobSpec:
    if not isinstance(spec, JobSpec):
        raise UsageError(f"expected a JobSpec from launch.job_spec(...), got {type(spec).__name__}")
    return spec


def dry_run(spec: JobSpec, prices: PriceTable | str | Path | None = None) -> dict:
    """What `--dry-run` prints: the job as it would be submitted, with its on-demand USD per hour (no AWS
    call); the role is the spec's, else $SAGEMAKER_ROLE, else a placeholder."""
    spec, table = _spec(spec), price_tables.table(prices)
    if spec.role is None:
        spec = dataclasses.replace(spec, role=os.environ.get("SAGEMAKER_ROLE") or None)
    return spec.describe(table.hourly(spec.instance_type))


def _check_runs_dir(runs_dir) -> Path | None:
    return None if runs_dir is None else check_folder(Path(runs_dir), "--runs-dir")


def _save(record: dict, runs: Path | None) -> Path | None:
    """Write runs/<job>.json; its absolute path, so that it still names the file after a chdir."""
    return report.save(record, runs).resolve() if runs is not None else None


def run_local(spec: JobSpec, data: str | Path = "data", jobs_dir: str | Path = "jobs", runs_dir: str | Path | None = "runs",
              prices: PriceTable | str | Path | None = None, timeout_s: float | None = None,
              container_venv: bool = False) -> Run:
    """Run the job here as SageMaker would (`--local`): one process per host in `jobs_dir/<job>/`.

    `data` is prepared from the Titanic CSV when it has no channels yet; the run is recorded in
    `runs_dir/<job>.json` (None: not recorded). Ctrl-C or SIGTERM stops the job as StopTrainingJob
    would (status "Stopped"). `timeout_s` defaults to the spec's max run. `container_venv` installs
    requirements.txt first into each host's own environment, holding only what the training image holds.
    """
    spec, table = _spec(spec), price_tables.table(prices)
    check_type("run_local", "container_venv", container_venv, (bool,), "True or False")
    # From here on Ctrl-C and SIGTERM are recorded, not raised inside library code: before the job
    # starts they end the call, after it they stop the job as StopTrainingJob would.
    stop = emulator.StopRequest()
    with stop.installed():
        check_folder(Path(jobs_dir), "--jobs-dir")
        runs = _check_runs_dir(runs_dir)
        data_dir = s3data.check_data_dir(Path(data))
        stop.raise_if_requested()
        summary = emulator.run(spec, data_dir, Path(jobs_dir), timeout_s=timeout_s, stop=stop, container_venv=container_venv)
    record = report.local_record(summary, table)
    return Run.of(record, _save(record, runs), summary)


def run_sagemaker(spec: JobSpec, data: str | Path = "data", wait: bool = True, runs_dir: str | Path | None = "runs",
                  prices: PriceTable | str | Path | None = None) -> Run:
    """Submit the job to SageMaker in the spec's region (needs AWS credentials, a role and a bucket: the
    spec's, else $SAGEMAKER_ROLE / the session's default bucket). With `wait`, follow its logs to the end
    and record it in `runs_dir/<job>.json`; without, return at once with status "Submitted"."""
    return _run_sagemaker(_spec(spec), data, wait, runs_dir, prices, role_flag=spec.role, region_flag=spec.region)


def _run_sagemaker(spec: JobSpec, data, wait: bool, runs_dir, prices, role_flag: str | None,
                   region_flag: str | None) -> Run:
    """`run_sagemaker`, with the role and region as the command line gives them (None: AWS's configuration)."""
    table = price_tables.table(prices)
    runs = _check_runs_dir(runs_dir)
    data_dir = s3data.check_data_dir(Path(data))
    aws = remote.resolve_aws(spec, role_flag, region_flag)
    submitted = remote.submit(aws, data_dir, wait=wait)
    if not wait:
        known = {"mode": "sagemaker", "job_name": submitted.job_name, "status": "Submitted",
                 "checkpoint_s3_uri": submitted.checkpoint_s3_uri, "resume": aws.spec.resume, **submitted.upload}
        return Run.of(known)
    described = aws.boto_session.client("sagemaker").describe_training_job(TrainingJobName=submitted.job_name)
    record = report.summarize(described, table, wall_seconds=round(time.time() - submitted.submitted_at, 1))
    return Run.of(record, _save(record, runs))


def wait(job_name: str, region: str | None = None, runs_dir: str | Path | None = "runs",
         prices: PriceTable | str | Path | None = None, logs: bool = True) -> Run:
    """Follow the SageMaker training job `job_name` to its end (printing its logs), record it in
    `runs_dir/<job>.json` and return it."""
    check_job_name(job_name, f"wait({job_name!r})")
    table = price_tables.table(prices)
    runs = _check_runs_dir(runs_dir)
    session = remote.open_session(region)
    remote.wait(session, job_name, logs=logs)
    described = session.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    record = report.summarize(described, table, wall_seconds=None)
    return Run.of(record, _save(record, runs))


def compare(runs, prices: PriceTable | str | Path | None = None) -> Comparison:
    """Runs side by side, in the order given: one or a list of `Run` objects, run records (dicts), files
    (`runs/<job>.json`, `jobs/<job>/summary.json`, tuning results: a row per trial) or patterns ("runs/*.json")."""
    items = [runs] if isinstance(runs, (str, Path, Run, dict)) else list(runs)
    if not items:
        raise UsageError("compare() needs runs: Run objects, records, or files such as runs/*.json")
    table = price_tables.table(prices)
    rows: list[dict] = []
    for item in items:
        if isinstance(item, Run):
            rows.append(item.record)
        elif isinstance(item, dict):
            rows.extend(compare_runs.as_records(item, f"compare({item.get('job_name') or 'a dict'})", table))
        elif isinstance(item, (str, Path)):
            rows.extend(compare_runs.load_runs([item], table))
        else:
            raise UsageError(f"compare(): {item!r} is not a Run, a run record or a file name")
    return Comparison(rows=compare_runs.distinct(rows))

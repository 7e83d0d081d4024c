"""`import launch` as a Python API: the result objects its functions return, local runs recorded in
runs/ like real ones, `--compare` over run records, local summaries and tuning results, and the
comparison drawn with `--plot`."""

from __future__ import annotations

import json
import shutil

import boto3
import pytest

import launch
from launch.jobs.prices import load as load_prices
from launch.records import compare, report
from tests.helpers import BUCKET, REGION, ROLE, dry_run_summary, submit_inprocess

RECORD_KEYS = {"mode", "job_name", "status", "failure_reason", "instance_type", "instance_count", "spot",
               "training_seconds", "billable_seconds", "billable_instance_seconds", "spot_saving_percent", "wall_seconds",
               "usd_per_hour", "estimated_cost_usd", "emulated_cost_usd", "prices_as_of", "model_artifact",
               "final_metrics", "val_acc", "test_acc"}


@pytest.fixture
def data_dir(prepared, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(prepared, out)
    return out


def test_job_spec_and_dry_run_are_the_flags_checks_and_output(capsys, monkeypatch):
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    spec = launch.job_spec(instance_count=2, spot=True, hyperparameters={"epochs": 40, "hidden_sizes": [64, 32],
                                                                         "early_stopping": False})
    assert isinstance(spec, launch.JobSpec)
    assert spec.hyperparameters == {"epochs": "40", "hidden_sizes": "[64, 32]", "early_stopping": "false"}
    plan = launch.dry_run(spec)
    code, out, err = submit_inprocess(["--dry-run", "--instance-count", "2", "--spot", "--hp", "epochs=40",
                                       "--hp", "hidden_sizes=[64, 32]", "--hp", "early_stopping=false"], capsys)
    assert code == 0, err
    assert plan == dry_run_summary(err)
    for options, message in (
        ({"instance_count": 0}, "--instance-count 0: must be at least 1"),
        ({"instance_count": "2"}, "job_spec(instance_count='2'): expected an integer"),
        ({"gpu": "yes"}, "job_spec(gpu='yes'): expected True or False"),
        ({"hyperparameters": {"epochs": "many"}}, "--hp epochs=many: --epochs: "),
        ({"hyperparameters": {"nope": 1}}, "--hp nope=1: 'nope' is not a flag of entry/train.py"),
        ({"hyperparameters": {"epochs": object()}}, "job_spec(hyperparameters={'epochs': <object"),
        ({"instance_type": "ml.m5.large", "gpu": True}, "--gpu with --instance-type ml.m5.large"),
    ):
        with pytest.raises(launch.UsageError) as caught:
            launch.job_spec(**options)
        assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    with pytest.raises(launch.UsageError, match="expected a JobSpec"):
        launch.dry_run({"instance_type": "ml.m5.large"})


@pytest.mark.slow
def test_run_local_returns_a_run_recorded_like_a_real_one(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = launch.run_local(launch.job_spec(hyperparameters={"epochs": 2, "hidden_sizes": [8]}), data=data_dir)
    assert isinstance(run, launch.Run) and run.mode == "local"
    assert run.ok and run.status == "Completed", run.summary
    assert run.record_path == tmp_path / "runs" / f"{run.job_name}.json"
    record = json.loads(run.record_path.read_text())
    assert record == run.record and RECORD_KEYS <= set(record)
    metrics = run.summary["metrics"]
    assert record["mode"] == "local" and record["instance_type"] == "ml.m5.large" and record["instance_count"] == 1
    assert run.val_acc == metrics["val_acc"] and run.test_acc == metrics["test_acc"] and 0.5 < run.val_acc <= 1
    assert run.metrics["epochs_run"] == 2 and run.metrics["test_acc"] == run.test_acc
    assert run.wall_seconds == run.summary["wall_seconds"] > metrics["fit_seconds"] > 0
    # Nothing was billed; the estimate is the wall time priced as the emulated instance type.
    assert record["estimated_cost_usd"] is None and run.cost_usd is None and record["billable_seconds"] is None
    assert record["emulated_cost_usd"] == pytest.approx(run.wall_seconds * 0.115 / 3600, abs=1e-6)
    assert run.job_dir == tmp_path / "jobs" / run.job_name and (run.job_dir / "model.tar.gz").is_file()
    assert run.model_artifact == str(run.job_dir / "model.tar.gz")

    # The record, the run and the job's own summary.json compare alike, and together are one run.
    for source in (run, run.record_path, run.job_dir / "summary.json"):
        (row,) = launch.compare(source).rows
        assert (row["val_acc"], row["test_acc"], row["wall_seconds"]) == (run.val_acc, run.test_acc, run.wall_seconds)
        assert row["emulated_cost_usd"] == record["emulated_cost_usd"]
    comparison = launch.compare([run, run.record_path, run.job_dir / "summary.json"])
    assert isinstance(comparison, launch.Comparison) and len(comparison.rows) == 1
    assert comparison.table == str(comparison) and f"~{record['emulated_cost_usd']:.4f}" in comparison.table
    assert comparison.table.splitlines()[-1] == compare.COST_ESTIMATE_NOTE
    picture = comparison.plot(tmp_path / "compare.png")
    _check_png(picture)


def _check_png(path) -> None:
    from PIL import Image

    assert path.stat().st_size > 10_000
    with Image.open(path) as image:
        image.load()  # decodes the whole picture
        assert image.format == "PNG" and image.width > 800 and image.height > 200


def _local_summary(tmp_path) -> str:
    """A local job's summary.json as the emulator writes it: the metrics nested under `metrics`."""
    summary = {"status": "Completed", "job_name": "titanic-lightning-m5-large-x2-20250101000000",
               "job_dir": str(tmp_path / "jobs" / "j"), "model_artifact": str(tmp_path / "jobs" / "j" / "model.tar.gz"),
               "wall_seconds": 36.0, "failure_reason": None, "instance_type": "ml.m5.large", "instance_count": 2,
               "distributed": True, "hosts": [{"host": "algo-1", "exit_code": 0}, {"host": "algo-2", "exit_code": 0}],
               "metrics": {"val_acc": 0.8252, "test_acc": 0.7972, "val_loss": 0.41, "best_epoch": 9, "epochs_run": 20,
                           "fit_seconds": 20.5, "accelerator": "cpu"}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    return str(path)


def _run_record(tmp_path) -> str:
    described = {"TrainingJobName": "gpu-run", "TrainingJobStatus": "Completed", "BillableTimeInSeconds": 350,
                 "TrainingTimeInSeconds": 350, "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1},
                 "FinalMetricDataList": [{"MetricName": "val_acc", "Value": 0.81},
                                         {"MetricName": "test_acc", "Value": 0.79}]}
    return str(report.save(report.summarize(described, load_prices(), 409.7), tmp_path / "runs"))


def _tuning_result(tmp_path) -> str:
    """A tuning result written by hand: two local trials, one of them pruned, and one SageMaker trial."""
    result = {
        "tuning_job": "tune-20250101", "objective": {"metric": "val_loss", "type": "Minimize"}, "wall_seconds": 80.0,
        "trials": [
            {"trial": 0, "hyperparameters": {"learning_rate": 0.01}, "status": "Completed", "val_loss": 0.40,
             "val_acc": 0.83, "test_acc": 0.80, "wall_seconds": 12.5, "instance_type": "ml.m5.large", "instance_count": 1,
             "mode": "local", "model_artifact": "jobs/t0/model.tar.gz"},
            {"trial": 1, "hyperparameters": {"learning_rate": 0.1}, "status": "Pruned", "val_loss": 0.55,
             "val_acc": 0.70, "wall_seconds": 4.0},
            {"trial": 2, "hyperparameters": {"learning_rate": 0.003}, "status": "Completed", "val_loss": 0.42,
             "val_acc": 0.82, "test_acc": 0.81, "wall_seconds": 300.0, "job_name": "tune-20250101-002-abc",
             "instance_type": "ml.m5.large", "instance_count": 2, "billable_seconds": 120,
             "estimated_cost_usd": 0.007667},
        ],
        "best": {"trial": 0, "hyperparameters": {"learning_rate": 0.01}, "val_loss": 0.40, "val_acc": 0.83,
                 "model_artifact": "jobs/t0/model.tar.gz"},
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(result))
    return str(path)


def _row(table: str, start: str) -> list[str]:
    (line,) = [line for line in table.splitlines() if line.startswith(start)]
    return line.split()


def test_compare_fills_every_column_for_local_summaries_records_and_tuning_results(tmp_path, capsys):
    files = [_local_summary(tmp_path), _run_record(tmp_path), _tuning_result(tmp_path)]
    code, out, err = submit_inprocess(["--compare", *files], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    header = lines[0].split()
    assert header[:3] == ["job", "mode", "instance"] and header[-2:] == ["val_acc", "test_acc"]
    assert len(lines) == 2 + 5 + 1 and lines[-1] == compare.COST_ESTIMATE_NOTE

    local = _row(out, "titanic-lightning-m5-large-x2-")
    # job mode instance n spot status wall training billable billed cost val_acc test_acc
    assert local == ["titanic-lightning-m5-large-x2-20250101000000", "local", "ml.m5.large", "2", "False", "Completed",
                     "36.0", "36", "-", "-", f"~{36 * 2 * 0.115 / 3600:.4f}", "0.8252", "0.7972"]
    assert _row(out, "gpu-run") == ["gpu-run", "sagemaker", "ml.g4dn.xlarge", "1", "False", "Completed", "409.7", "350",
                                    "350", "350", f"{350 * 0.736 / 3600:.4f}", "0.8100", "0.7900"]
    assert _row(out, "tune-20250101/trial-0") == ["tune-20250101/trial-0", "tuning", "ml.m5.large", "1", "-",
                                                  "Completed", "12.5", "-", "-", "-", f"~{12.5 * 0.115 / 3600:.4f}",
                                                  "0.8300", "0.8000"]
    assert _row(out, "tune-20250101/trial-1") == ["tune-20250101/trial-1", "tuning", "-", "-", "-", "Pruned", "4.0",
                                                  "-", "-", "-", "-", "0.7000", "-"]
    assert _row(out, "tune-20250101/trial-2") == ["tune-20250101/trial-2", "tuning", "ml.m5.large", "2", "-",
                                                  "Completed", "300.0", "-", "120", "240", "0.0077", "0.8200", "0.8100"]

    # The tuning command's own loader: the same records.
    records = compare.load_runs(files)
    assert [r["job_name"] for r in records][2:] == [f"tune-20250101/trial-{n}" for n in range(3)]
    assert records[2]["final_metrics"] == {"val_loss": 0.40, "val_acc": 0.83, "test_acc": 0.80}
    assert records[4]["training_job_name"] == "tune-20250101-002-abc" and records[2]["hyperparameters"] == {
        "learning_rate": 0.01}


@pytest.mark.parametrize("content, expected", [
    ("{", "not valid JSON"),
    ('{"some": "thing"}', "not a run record (runs/*.json), a local job's summary.json or a tuning result"),
    ('{"tuning_job": "t", "trials": [{"no": "number"}]}', "`trials` is not a list of objects with a `trial` number"),
    ('{"tuning_job": "t", "trials": []}', "holds no runs"),
])
def test_compare_refuses_what_it_cannot_read_in_one_line(content, expected, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, err = submit_inprocess(["--compare", str(bad)], capsys)
    assert code == 2 and out == ""
    assert err.strip().startswith(f"error: --compare {bad}: ") and expected in err and len(err.strip().splitlines()) == 1


def test_plot_draws_the_comparison_and_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    files = [_local_summary(tmp_path), _run_record(tmp_path), _tuning_result(tmp_path)]
    picture = tmp_path / "compare.png"
    code, out, err = submit_inprocess(["--compare", *files, "--plot", str(picture)], capsys)
    assert code == 0, err
    _check_png(picture)
    assert f"wrote {picture}" in err and out.startswith("job ")
    code, out, err = submit_inprocess(["--compare", *files[:2], "--plot", str(picture)], capsys)
    assert code == 0, err  # its own picture is replaced

    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's own picture")
    for argv, expected in (
        (["--compare", *files, "--plot", str(mine)], f"error: --plot {mine}: exists and was not written by "),
        (["--plot", str(tmp_path / "new.png")], "error: --plot draws the runs of --compare"),
        (["--compare", *files, "--plot", str(tmp_path / "compare.txt")], "ending in .png, .svg or .pdf"),
        (["--compare", *files, "--plot", str(tmp_path / "no-such-folder" / "c.png")], "does not exist"),
    ):
        code, out, err = submit_inprocess(argv, capsys)
        assert code == 2 and out == "", err
        (line,) = err.strip().splitlines()
        assert line.startswith("error: ") and expected in line
    assert mine.read_bytes() == b"the user's own picture"
    assert not (tmp_path / "new.png").exists() and not (tmp_path / "compare.txt").exists()
    with pytest.raises(launch.UsageError, match="exists and was not written by"):
        launch.compare(files).plot(mine)

    # Figures a hand-edited file may hold that no bar can show (NaN, text, out of range) get none.
    odd = {"mode": "local", "job_name": "odd", "status": "Completed", "wall_seconds": float("nan"), "val_acc": "high",
           "test_acc": 1e308, "emulated_cost_usd": -1.0}
    _check_png(launch.compare([odd, *files]).plot(tmp_path / "odd.png"))


@pytest.mark.slow
def test_run_sagemaker_without_waiting_then_wait_records_the_job(bucket, data_dir, tmp_path):
    spec = launch.job_spec(bucket=BUCKET, role=ROLE, hyperparameters={"epochs": 3})
    submitted = launch.run_sagemaker(spec, data=data_dir, wait=False, runs_dir=tmp_path / "runs")
    assert isinstance(submitted, launch.Run) and submitted.status == "Submitted" and submitted.record_path is None
    assert submitted.record["checkpoint_s3_uri"].endswith(f"/{submitted.job_name}/checkpoints")
    assert not (tmp_path / "runs").exists()

    run = launch.wait(submitted.job_name, runs_dir=tmp_path / "runs", logs=False)
    assert (run.job_name, run.mode, run.status) == (submitted.job_name, "sagemaker", "Completed")
    assert run.record_path == tmp_path / "runs" / f"{run.job_name}.json"
    assert json.loads(run.record_path.read_text()) == json.loads(json.dumps(run.record, default=str))
    assert RECORD_KEYS <= set(run.record) and run.record["instance_type"] == "ml.m5.large"

    # A failed job ends the wait like any other: its record says why.
    from moto.sagemaker.models import sagemaker_backends

    job = sagemaker_backends["123456789012"][REGION].training_jobs[run.job_name]
    job.training_job_status, job.failure_reason = "Failed", "AlgorithmError: out of memory"
    failed = launch.wait(run.job_name, runs_dir=tmp_path / "runs", logs=False)
    assert failed.status == "Failed" and failed.record["failure_reason"] == "AlgorithmError: out of memory"
    assert json.loads(failed.record_path.read_text())["status"] == "Failed"

    with pytest.raises(launch.UsageError, match=r"wait\('a/../b'\): not a training job name"):
        launch.wait("a/../b", runs_dir=None)
    with pytest.raises(launch.UsageError, match="no-such-job: no such training job in us-east-1"):
        launch.wait("no-such-job", runs_dir=None, logs=False)
    assert boto3.client("sagemaker", region_name=REGION).describe_training_job(
        TrainingJobName=run.job_name)["TrainingJobStatus"] == "Failed"


def test_job_spec_network_isolation_implies_the_wheelhouse_and_bad_values_are_one_line(tmp_path):
    isolated = launch.job_spec(network_isolation=True)
    assert isolated.network_isolation and isolated.uses_wheelhouse and "wheels" in isolated.channels
    plan = launch.dry_run(isolated)
    assert plan["network_isolation"] is True and plan["wheelhouse"] is True
    assert launch.job_spec(wheelhouse=True).uses_wheelhouse and not launch.job_spec(wheelhouse=True).network_isolation
    assert "wheels" not in launch.job_spec().channels
    for options, message in (({"network_isolation": "yes"}, "job_spec(network_isolation='yes'): expected True or False"),
                             ({"wheelhouse": 1}, "job_spec(wheelhouse=1): expected True or False")):
        with pytest.raises(launch.UsageError) as caught:
            launch.job_spec(**options)
        assert str(caught.value) == message
    with pytest.raises(launch.UsageError) as caught:
        launch.run_local(launch.job_spec(), data=tmp_path / "data", jobs_dir=tmp_path / "jobs", container_venv="yes")
    assert str(caught.value) == "run_local(container_venv='yes'): expected True or False"
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "data").exists()


def _drawn_runs() -> list[dict]:
    return [{"job_name": "titanic-lightning-m5-large-x1-20261204190242-ab12", "wall_seconds": 30.2,
             "emulated_cost_usd": 0.0008, "val_acc": 0.7902, "test_acc": 0.8212},
            {"job_name": "titanic-lightning-g4dn-xlarge-x1-20261204190510-03fe", "wall_seconds": 41.0,
             "estimated_cost_usd": 0.07, "val_acc": 0.8322, "test_acc": 0.8436},
            {"job_name": "titanic-tune-261204-191200-9a0c/trial-13", "wall_seconds": 12.5, "val_acc": 0.8042,
             "test_acc": None},
            {"job_name": "cpu", "wall_seconds": 20.0, "val_acc": 0.8, "test_acc": 0.83}]


def test_plot_zooms_the_accuracy_axes_to_the_accuracies_drawn():
    from launch.records import charts

    fig = charts.figure(_drawn_runs())
    by_title = {ax.get_title(): ax for ax in fig.axes}
    for title, drawn in (("Validation accuracy", [0.7902, 0.8322, 0.8042, 0.8]), ("Test accuracy", [0.8212, 0.8436, 0.83])):
        low, high = by_title[title].get_xlim()
        margin = 0.1
        assert min(drawn) - margin <= low < min(drawn) and max(drawn) < high <= max(drawn) + margin, (title, low, high)
    # A single value still gets a readable axis around it.
    assert charts.accuracy_limits([0.8, None]) == pytest.approx((0.79, 0.82))
    assert charts.accuracy_limits([None]) == (0.0, 1.0)


def test_plot_shortens_long_run_names_and_keeps_them_apart():
    from launch.records import charts

    runs = _drawn_runs()
    labels = [t.get_text() for t in charts.figure(runs).axes[0].get_yticklabels()]
    assert labels == charts.short_names([r["job_name"] for r in runs])
    assert len(set(labels)) == 4 and all(len(label) <= charts.NAME_CHARS for label in labels), labels
    assert labels[3] == "cpu"  # a short name is drawn whole
    assert labels[0].endswith("-ab12") and labels[1].endswith("-03fe") and labels[2].endswith("/trial-13")
    # Runs of one project lose the prefix they share first.
    local = ["titanic-lightning-m5-large-x1-20261204190242-ab12", "titanic-lightning-m5-xlarge-x2-20261204190510-03fe"]
    assert charts.short_names(local) == ["…large-x1-20261204190242-ab12", "…xlarge-x2-20261204190510-03fe"]
    # Names that would coincide once shortened stay whole.
    alike = ["p-" + "a" * 20 + "1" + "b" * 20, "p-" + "a" * 20 + "2" + "b" * 20]
    assert charts.short_names(alike) == alike

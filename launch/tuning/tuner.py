"""A SageMaker hyperparameter tuning job: the SDK's `HyperparameterTuner` around the ModelTrainer of
`remote.build_trainer` (the training job `submit.py` builds). SageMaker scores a job by the last
value of the objective it prints (the `final:` line's). Where the tuning request differs:

* the code is the `code` channel, uploaded under the prefix. The tuning API takes no entry point: a
  trial runs the image's toolkit, which copies the folder `sagemaker_submit_directory` names (the
  channel's, not an S3 URL: no network needed) into /opt/ml/code and runs `sagemaker_program`. (For a
  `SourceCode` the SDK would upload a sourcedir.tar.gz outside the prefix: the tuner gets none);
* no CheckpointConfig: every trial would get the same URI and find another trial's `last.ckpt`;
* no TensorBoard output: the tuning API's job definition has no such field.
Nothing here calls AWS before `resolve_aws`; `describe` (what `--dry-run` prints) calls nothing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from launch.console import log
from launch.jobs import code
from launch.jobs.spec import METRIC_DEFINITIONS, JobSpec
from launch.records import report
from launch.tuning.result import TUNING_BASE, tuning_name
from launch.tuning.space import CATEGORICAL, CONTINUOUS, STRATEGY_NAMES, Plan, grid_size

TUNING_PYTHONPATH = f"/opt/ml/code:{code.CODE_DIR_IN_CONTAINER}"
TUNING_JOB_PLACEHOLDER = "<tuning-job-name>"
# The toolkit's hyperparameters for the script to run and the folder, filled from the code channel, to run it from.
TRIAL_CODE = {"sagemaker_program": code.ENTRY_SCRIPT, "sagemaker_submit_directory": code.CODE_DIR_IN_CONTAINER}
POLL_S = 30.0
# How a training job of the tuning ended, in the summary's words: a job the tuner stopped early is Pruned.
TRIAL_STATUS = {"Completed": "Completed", "Stopped": "Pruned", "Failed": "Failed"}


def tuning_config(plan: Plan) -> dict:
    """HyperParameterTuningJobConfig as CreateHyperParameterTuningJob takes it."""
    ranges = {"IntegerParameterRanges": [], "ContinuousParameterRanges": [], "CategoricalParameterRanges": []}
    for r in plan.ranges:
        ranges[f"{r.kind}ParameterRanges"].append(r.as_api())
    limits = {"MaxParallelTrainingJobs": plan.max_parallel}
    if plan.max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = plan.max_jobs
    config = {
        "Strategy": STRATEGY_NAMES[plan.search],
        "HyperParameterTuningJobObjective": {"Type": plan.objective_type, "MetricName": plan.objective},
        "ResourceLimits": limits,
        "ParameterRanges": {kind: listed for kind, listed in ranges.items() if listed},  # as the SDK sends them
        "TrainingJobEarlyStoppingType": plan.early_stopping_type,
        "RandomSeed": plan.seed,
    }
    if plan.search == "hyperband":
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": plan.epochs}}
    return config


def describe(spec: JobSpec, plan: Plan, hourly_usd: float | None) -> dict:
    """What `--dry-run` prints: the tuning request as it would be created (offline)."""
    job = spec.describe(hourly_usd)
    channels = {**spec.channels, code.CODE_CHANNEL: spec.job_input_s3_uri(TUNING_JOB_PLACEHOLDER, code.CODE_CHANNEL)}
    definition = {
        "StaticHyperParameters": {**plan.static, **TRIAL_CODE},
        "AlgorithmSpecification": {"TrainingImage": job["image_uri"], "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "RoleArn": job["role"],
        "InputDataConfig": [{"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}},
            "InputMode": "File"} for name, uri in channels.items()],
        "OutputDataConfig": {"S3OutputPath": spec.output_s3_uri},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count, "VolumeSizeInGB": 30},
        "StoppingCondition": spec.stopping_condition,
        **({"EnableManagedSpotTraining": True} if spec.spot else {}),  # the SDK sends the flag only when on
        **({"EnableNetworkIsolation": True} if spec.network_isolation else {}),
        "Environment": {"PYTHONPATH": TUNING_PYTHONPATH},
    }
    return {
        "HyperParameterTuningJobName": TUNING_JOB_PLACEHOLDER,
        "HyperParameterTuningJobConfig": tuning_config(plan),
        "TrainingJobDefinition": definition,
        "Tags": [{"Key": k, "Value": v} for k, v in spec.tags.items()],
        "distributed": job["distributed"],
        "estimated_usd_per_hour_per_job": job["estimated_usd_per_hour"],
        "training_jobs": plan.max_jobs if plan.max_jobs is not None else grid_size(plan.ranges),
        "region": spec.region,
    }


def trial_channels(trainer, spec: JobSpec, code_dir: Path, name: str) -> list:
    """The training job's channels, and `code_dir` uploaded by the SDK as the `code` channel of the tuning `name`."""
    data = [trainer.create_input_data_channel(channel, uri) for channel, uri in spec.channels.items()]
    # The session puts its prefix (--prefix) before the key prefix given: `spec.job_input_s3_uri`.
    shipped = trainer.create_input_data_channel(code.CODE_CHANNEL, str(code_dir),
                                                key_prefix=f"{spec.base_job_name}/{name}/input")
    return [*data, shipped]


def build_tuner(trainer, plan: Plan):
    """The SDK's HyperparameterTuner around `trainer` (from `remote.build_trainer`), as the module says."""
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter
    from sagemaker.core.shapes import HyperbandStrategyConfig, HyperParameterTuningJobStrategyConfig
    from sagemaker.train.tuner import HyperparameterTuner

    trainer.checkpoint_config = None
    trainer.environment = {"PYTHONPATH": TUNING_PYTHONPATH}
    trainer.source_code = None  # the code goes as the `code` channel (`trial_channels`), run by TRIAL_CODE
    trainer.hyperparameters = {**(trainer.hyperparameters or {}), **TRIAL_CODE}
    strategy_config = HyperParameterTuningJobStrategyConfig(hyperband_strategy_config=HyperbandStrategyConfig(
        min_resource=1, max_resource=plan.epochs)) if plan.search == "hyperband" else None
    ranges = {}
    for r in plan.ranges:
        if r.kind == CATEGORICAL:
            ranges[r.name] = CategoricalParameter(list(r.values))
        else:
            api = r.as_api()
            kind = ContinuousParameter if r.kind == CONTINUOUS else IntegerParameter
            ranges[r.name] = kind(api["MinValue"], api["MaxValue"], scaling_type=api["ScalingType"])

    class Tuner(HyperparameterTuner):
        # The SDK's tuner carries a ModelTrainer's VPC settings into the trials' definition but not
        # its network isolation: without this the trials would run with the network on.
        def _build_training_job_definition(self, *args, **kwargs):
            definition = super()._build_training_job_definition(*args, **kwargs)
            networking = getattr(self.model_trainer, "networking", None)
            if networking is not None and getattr(networking, "enable_network_isolation", None) is True:
                definition.enable_network_isolation = True
            return definition

    return Tuner(model_trainer=trainer, objective_metric_name=plan.objective, objective_type=plan.objective_type,
                 hyperparameter_ranges=ranges, metric_definitions=METRIC_DEFINITIONS,
                 strategy=STRATEGY_NAMES[plan.search], strategy_config=strategy_config, max_jobs=plan.max_jobs,
                 max_parallel_jobs=plan.max_parallel, early_stopping_type=plan.early_stopping_type,
                 random_seed=plan.seed, base_tuning_job_name=TUNING_BASE)


def submit(aws, data_dir: Path, plan: Plan) -> tuple[str, float, dict]:
    """Upload the data and wheels, stage the code, create the tuning job: (its name, start time, the uploads)."""
    from launch.jobs import remote

    upload = remote.upload_inputs(aws, data_dir)
    with tempfile.TemporaryDirectory(prefix="titanic-code-") as tmp:
        staged = code.stage(Path(tmp), wheelhouse=aws.spec.uses_wheelhouse)
        trainer = remote.build_trainer(aws, staged)
        name = tuning_name()
        channels = trial_channels(trainer, aws.spec, staged, name)
        tuner = build_tuner(trainer, plan)
        started = time.time()
        tuner.tune(inputs=channels, job_name=name, wait=False)
    name = tuner.latest_tuning_job.hyper_parameter_tuning_job_name
    log(f"created tuning job {name}: {plan.search} search, up to {plan.max_jobs or grid_size(plan.ranges)} "
        f"training job(s), {plan.max_parallel} at a time")
    return name, started, upload


def wait(sagemaker, name: str, poll_s: float = POLL_S) -> dict:
    """Follow the tuning job until it ends, one progress line per change; return its description."""
    last = None
    while True:
        described = sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        status = described["HyperParameterTuningJobStatus"]
        counters = described.get("TrainingJobStatusCounters") or {}
        line = f"tuning job {name}: {status}; training jobs " + ", ".join(f"{k} {v}" for k, v in counters.items() if v)
        if line != last:
            log(line)
            last = line
        if status in ("Completed", "Failed", "Stopped"):
            return described
        time.sleep(poll_s)


def collect(sagemaker, described: dict, prices, out: Path, runs_dir: Path, wall_seconds: float) -> list[dict]:
    """Every training job of the tuning: its run record in `runs_dir`, and its row of the summary."""
    name = described["HyperParameterTuningJobName"]
    paginator = sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    summaries = [s for page in paginator.paginate(HyperParameterTuningJobName=name) for s in page["TrainingJobSummaries"]]
    summaries.sort(key=lambda s: (s.get("CreationTime") is None, s.get("CreationTime"), s["TrainingJobName"]))
    rows = []
    for number, job in enumerate(summaries):
        record = report.summarize(sagemaker.describe_training_job(TrainingJobName=job["TrainingJobName"]), prices, None)
        hyperparameters = {k: str(v) for k, v in (job.get("TunedHyperParameters") or {}).items()}
        status = TRIAL_STATUS.get(job["TrainingJobStatus"], job["TrainingJobStatus"])
        record.update(tuning_job=name, trial=number, hyperparameters=hyperparameters, status=status)
        report.save(record, runs_dir)
        metrics = record["final_metrics"]
        rows.append({"trial": number, "training_job": job["TrainingJobName"], "job_name": job["TrainingJobName"],
                     "hyperparameters": hyperparameters, "status": status,
                     **{k: metrics.get(k) for k in ("val_loss", "val_acc", "val_auroc", "test_acc")},
                     **{k: record[k] for k in ("wall_seconds", "instance_type", "instance_count", "training_seconds",
                                               "billable_seconds", "estimated_cost_usd", "model_artifact")}})
    return rows


def search_sagemaker(spec: JobSpec, plan: Plan, data: Path, out: Path, runs_dir: Path, prices, follow: bool,
                     role_flag: str | None, region_flag: str | None) -> dict:
    """Create the tuning job; with `follow`, wait for it, record its trials and return its summary (written with
    tuning.png into `out/<name>/`), else what is known at once (`tuning_job`, status "Submitted", the uploads)."""
    from launch.jobs import prices as price_tables
    from launch.jobs import remote, s3data
    from launch.tuning import result as tuning_result
    from titanic_lightning.io.outputs import check_folder

    check_folder(out, "--out")
    check_folder(runs_dir, "--runs-dir")
    table = price_tables.table(prices)
    data_dir = s3data.check_data_dir(data)
    aws = remote.resolve_aws(spec, role_flag, region_flag)
    name, started, upload = submit(aws, data_dir, plan)
    if not follow:
        return {"tuning_job": name, "status": "Submitted", **upload}
    sagemaker = aws.boto_session.client("sagemaker")
    described = wait(sagemaker, name)
    wall = round(time.time() - started, 1)
    rows = collect(sagemaker, described, table, out, runs_dir, wall)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    result = tuning_result.summary(name, "sagemaker", plan, rows, wall, folder,
                                   stopped=described["HyperParameterTuningJobStatus"] == "Stopped")
    best_name = (described.get("BestTrainingJob") or {}).get("TrainingJobName")
    if result["best"] is not None and best_name and best_name != result["best"].get("training_job"):
        log(f"note: SageMaker's best training job is {best_name}; by the final {plan.objective} lines it is "
            f"{result['best'].get('training_job')}")
    tuning_result.write(folder, result, plan)
    return result

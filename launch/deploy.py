"""Deploy a trained model.tar.gz to a SageMaker real-time endpoint, or delete that endpoint.

Run:
    python launch/deploy.py --model-data s3://bucket/path/model.tar.gz --role arn:aws:iam::...:role/R \
        [--instance-type ml.m5.large] [--endpoint-name N] [--region us-east-1] [--no-wait]
    python launch/deploy.py --delete --endpoint-name N

The archive is what a training job uploads (model.pt beside code/inference.py and code/requirements.txt),
served by AWS's PyTorch inference image. The model, endpoint configuration and endpoint all take the
endpoint's name; a failure part way removes what was already created. An endpoint bills every hour it exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run by path (`python launch/deploy.py`): make the repository importable as the module form is.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.console import ArgumentParser, launcher_errors  # noqa: E402
from launch.jobs.checks import JOB_NAME, check_role  # noqa: E402
from launch.jobs.remote import open_session  # noqa: E402
from titanic_lightning.command import run_command  # noqa: E402
from titanic_lightning.contracts import PROJECT  # noqa: E402
from titanic_lightning.errors import UsageError  # noqa: E402
from titanic_lightning.sagemaker_facts import OPT_ML  # noqa: E402
from titanic_lightning.serving.model_source import parse_s3_uri  # noqa: E402

# The newest PyTorch inference image the installed SDK knows for py312; it runs what model.pt needs.
FRAMEWORK_VERSION, PY_VERSION = "2.6", "py312"
CODE_DIR = f"{OPT_ML}/model/code"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python launch/deploy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-data", help="s3:// URI of the training job's model.tar.gz")
    parser.add_argument("--role", help="IAM role ARN that SageMaker assumes to read the model and pull the image")
    parser.add_argument("--instance-type", default="ml.m5.large",
                        help="the endpoint's instance type (default ml.m5.large, about $0.115 per hour in us-east-1; "
                             "an endpoint bills every hour it exists)")
    parser.add_argument("--endpoint-name", help="default: titanic-lightning-<UTC time>")
    parser.add_argument("--region", help="default: the AWS configuration's region")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="wait until the endpoint is InService (default) or return once it is Creating")
    parser.add_argument("--delete", action="store_true", help="delete the endpoint, its configuration and model")
    args = parser.parse_args(argv)
    if args.endpoint_name is not None and not JOB_NAME.match(args.endpoint_name):
        raise UsageError(f"--endpoint-name {args.endpoint_name!r}: use 1-63 letters, digits and inner hyphens")
    if args.delete:
        if args.endpoint_name is None:
            raise UsageError("--delete needs --endpoint-name")
        return args
    if not args.model_data or not args.role:
        raise UsageError("deploying needs --model-data s3://.../model.tar.gz and --role ARN")
    parse_s3_uri(args.model_data)
    if not args.model_data.endswith(".tar.gz"):
        raise UsageError(f"--model-data {args.model_data}: expected the training job's model.tar.gz")
    check_role(args.role, "--role")
    if not args.instance_type.startswith("ml."):
        raise UsageError(f"--instance-type {args.instance_type!r}: SageMaker instance types start with ml.")
    args.endpoint_name = args.endpoint_name or time.strftime(f"{PROJECT}-%Y%m%d-%H%M%S", time.gmtime())
    return args


def _check_model_data(session, uri: str) -> None:
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(uri)
    try:
        session.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise UsageError(f"--model-data {uri}: {'no such object' if code in ('404', 'NoSuchKey') else code}") from None


def deploy(session, model_data: str, role: str, instance_type: str, name: str, wait: bool = True):
    """Create model, endpoint configuration and endpoint named `name`; return the Endpoint."""
    from sagemaker.core import image_uris
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model
    from sagemaker.core.shapes import ContainerDefinition, ProductionVariant

    region = session.region_name
    container = ContainerDefinition(
        image=image_uris.retrieve("pytorch", region, version=FRAMEWORK_VERSION, py_version=PY_VERSION,
                                  instance_type=instance_type, image_scope="inference"),
        model_data_url=model_data,
        # The PyTorch serving toolkit loads SAGEMAKER_PROGRAM from SAGEMAKER_SUBMIT_DIRECTORY.
        environment={"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": CODE_DIR,
                     "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": region},
    )
    created = []
    try:
        created.append(Model.create(model_name=name, primary_container=container, execution_role_arn=role,
                                    session=session, region=region))
        created.append(EndpointConfig.create(
            endpoint_config_name=name, session=session, region=region,
            production_variants=[ProductionVariant(variant_name="AllTraffic", model_name=name,
                                                   initial_instance_count=1, instance_type=instance_type)],
        ))
        endpoint = Endpoint.create(endpoint_name=name, endpoint_config_name=name, session=session, region=region)
        created.append(endpoint)
        if wait:
            endpoint.wait_for_status("InService", poll=15, timeout=1800)
        return endpoint
    except BaseException:
        for resource in reversed(created):
            try:
                resource.delete()
            except Exception as exc:  # noqa: BLE001 - report what is left, then the original error
                print(f"could not remove {type(resource).__name__} {name}: {exc}", file=sys.stderr)
        raise


def delete(session, name: str) -> list[str]:
    """Delete endpoint `name`, then its configuration and the models it served; return what went."""
    from botocore.exceptions import ClientError
    from sagemaker.core.resources import Endpoint, EndpointConfig, Model

    region = session.region_name
    try:
        endpoint = Endpoint.get(endpoint_name=name, session=session, region=region)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        raise UsageError(f"--endpoint-name {name}: no such endpoint in {region} ({code})") from None
    config = EndpointConfig.get(endpoint_config_name=endpoint.endpoint_config_name, session=session, region=region)
    models = [v.model_name for v in config.production_variants]
    endpoint.delete()
    config.delete()
    for model in models:
        Model.get(model_name=model, session=session, region=region).delete()
    return [f"endpoint {name}", f"endpoint config {config.endpoint_config_name}", *(f"model {m}" for m in models)]


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    session = open_session(args.region)
    if args.delete:
        print("deleted " + ", ".join(delete(session, args.endpoint_name)))
        return
    _check_model_data(session, args.model_data)
    endpoint = deploy(session, args.model_data, args.role, args.instance_type, args.endpoint_name, args.wait)
    endpoint.refresh()
    print(f"endpoint {args.endpoint_name}: {endpoint.endpoint_status} on {args.instance_type}. It bills every hour "
          f"until deleted: python launch/deploy.py --delete --endpoint-name {args.endpoint_name}"
          f"{' --region ' + args.region if args.region else ''}")


def _main(argv: list[str]) -> None:
    launcher_errors(main, argv)


if __name__ == "__main__":
    run_command(_main)

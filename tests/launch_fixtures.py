"""Fixtures for the launcher's tests: a moto S3/SageMaker server on 127.0.0.1 with a recorder of
the requests it receives, the environment that points boto3 at it, and helpers to run
`launch/submit.py` in-process or as a subprocess.

Use with `from tests.launch_fixtures import *  # noqa: F403` in a test module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env

SUBMIT = REPO / "launch" / "submit.py"
ROLE = "arn:aws:iam::123456789012:role/TitanicTraining"
BUCKET = "titanic-test-bucket"
REGION = "us-east-1"
# Anything that could point boto3 somewhere real, or at other credentials.
AWS_VARS = ("AWS_", "SAGEMAKER_", "BOTO_")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """One ThreadedMotoServer for the session; yields its endpoint URL."""
    from moto.moto_api import recorder
    from moto.server import ThreadedMotoServer

    from launch.local import free_port

    recorder._location = str(tmp_path_factory.mktemp("moto") / "recording.jsonl")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch, tmp_path):
    """Fake credentials, region us-east-1, no role validation, boto3 pointed at moto."""
    for key in list(os.environ):
        if key.startswith(AWS_VARS):
            monkeypatch.delenv(key)
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def bucket(aws_env):
    """An empty bucket named BUCKET (recreated for every test)."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    try:
        for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
        s3.delete_bucket(Bucket=BUCKET)
    except s3.exceptions.NoSuchBucket:
        pass
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


class Recording:
    """The requests moto received while recording, decoded."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def _call(self, action: str) -> str:
        import urllib.request

        method = "GET" if action == "download-recording" else "POST"
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method=method, data=None)
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.read().decode()

    def start(self) -> Recording:
        self._call("reset-recording")
        self._call("start-recording")
        return self

    def stop(self) -> list[dict]:
        text = self._call("download-recording")
        self._call("stop-recording")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    @staticmethod
    def sagemaker_calls(entries: list[dict], target: str) -> list[dict]:
        """Bodies of SageMaker JSON requests with `X-Amz-Target: SageMaker.<target>`."""
        import base64

        out = []
        for entry in entries:
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            if headers.get("x-amz-target") == f"SageMaker.{target}":
                body = entry["body"]
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode()
                out.append(json.loads(body))
        return out

    @staticmethod
    def s3_puts(entries: list[dict]) -> list[str]:
        return [entry["url"] for entry in entries if entry["method"] == "PUT" and "/moto-api/" not in entry["url"]]


@pytest.fixture
def recording(moto_server):
    return Recording(moto_server)


def submit_inprocess(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    from launch.submit import _main
    from titanic_lightning.command import run_command

    with pytest.raises(SystemExit) as exc:
        run_command(_main, argv)
    out, err = capsys.readouterr()
    code = exc.value.code if isinstance(exc.value.code, int) else 1
    return code, out, err


def submit_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment without AWS settings, plus `env`."""
    base = clean_env()
    for key in list(base):
        if key.startswith(AWS_VARS):
            del base[key]
    base.update(env or {})
    return base


def submit_command(args: list[str]) -> list[str]:
    return [sys.executable, str(SUBMIT), *args]


def submit_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    """Run `python launch/submit.py args...` with a clean environment (plus `env`)."""
    return subprocess.run(submit_command(args), cwd=cwd, env=submit_env(env), capture_output=True, text=True,
                          timeout=timeout)

"""Fixtures: the real Titanic CSV (found as the commands find it), the real data prepared once,
tiny synthetic channels, and one moto S3/SageMaker server on 127.0.0.1 with the environment that
points boto3 at it (helpers that are not fixtures are in tests/helpers.py)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.helpers")  # the helpers' asserts report their values too

from tests.helpers import AWS_VARS, BUCKET, REGION, Recording, write_channel  # noqa: E402

NO_CSV = "this test needs the real Titanic CSV"


def pytest_configure(config):
    # pytest-xdist's workers ignore Ctrl-C (the controller stops them), and an ignored signal stays
    # ignored in every process they start: the Ctrl-C tests' commands would never see theirs.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def titanic_csv() -> Path:
    """The real CSV, found exactly as the commands find it: TITANIC_CSV, the user cache, the pinned
    download. Where none of them gives it, each test that needs it fails: a suite that silently
    skipped them would look green while proving nothing on the real data."""
    from titanic_lightning import environment
    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.errors import UsageError

    try:
        return resolve_csv(None).resolve()
    except UsageError as exc:
        error = str(exc)
    variable = os.environ.get("TITANIC_CSV")
    looked = (f"TITANIC_CSV={variable}" if variable else
              f"TITANIC_CSV (unset), then the cache {environment.cache_dir() / 'titanic.csv'}, "
              f"then the download {environment.titanic_csv_url()}")
    pytest.fail(f"{NO_CSV}, looked for as the commands do ({looked}): {error}", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # From the reports, which reach this process from pytest-xdist's workers too.
    reasons = [str(r.longrepr) for key in ("error", "failed") for r in terminalreporter.stats.get(key, [])
               if str(r.longrepr).startswith(NO_CSV)]
    if reasons:
        terminalreporter.section("the Titanic CSV", red=True, bold=True)
        terminalreporter.write_line(reasons[0], red=True, bold=True)
        terminalreporter.write_line("every test that needs the real data ended in an error for this reason")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, titanic_csv) -> Path:
    """The real data prepared once (default feature set) for the whole session; treat as read-only."""
    from titanic_lightning.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(titanic_csv, out)
    return out


@pytest.fixture
def tiny_channels(tmp_path) -> dict[str, Path]:
    """Tens of synthetic rows per split, in the lesson's key layout."""
    return {
        split: write_channel(tmp_path / "data" / f"{split}_data.npz", split, rows=rows, seed=i)
        for i, (split, rows) in enumerate((("train", 48), ("val", 24), ("test", 24)))
    }


# --- AWS, served by moto ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """One ThreadedMotoServer for the session; yields its endpoint URL."""
    from moto.moto_api import recorder
    from moto.server import ThreadedMotoServer

    from launch.jobs.container import free_port

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
def fresh_aws(aws_env, moto_server):
    """`aws_env` on an empty account: moto keeps its state across the session's tests, so this resets it."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).close()
    return aws_env


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


@pytest.fixture
def recording(moto_server):
    return Recording(moto_server)


@pytest.fixture
def cached_wheelhouse(tmp_path, monkeypatch):
    """The training image's wheelhouse, already in the cache (a tiny fake wheel): no download."""
    import json

    from launch.jobs import code, spec, wheelhouse
    from tests.helpers import fake_wheel

    monkeypatch.setenv(wheelhouse.CACHE_VARIABLE, str(tmp_path / "cache"))
    key = wheelhouse.key(code.requirements(), wheelhouse.Target.image(spec.PY_VERSION))
    folder = tmp_path / "cache" / "wheelhouse" / key
    wheel = fake_wheel(folder, "tinydep", "1.0")
    (folder / wheelhouse.MANIFEST).write_text(json.dumps({"wheels": [wheel.name]}))
    return key, wheel

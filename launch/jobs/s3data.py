"""The job's data channels: prepare the npz files locally if missing, upload them to S3 once.

Layout in S3 (`s3://B/P/data/<channel>/`):

    train/train_data.npz  train/preprocessing.json   (the entry reads preprocessing.json beside
    val/val_data.npz      test/test_data.npz          the training data)

With a wheelhouse, its wheels go under `s3://B/P/wheels/<key>/` the same way (`upload_files`).

Each object carries its sha256 in metadata (`x-amz-meta-sha256`); an upload is skipped when the
object already holds the same content.
"""

from __future__ import annotations

from pathlib import Path

from launch.console import log
from titanic_lightning.contracts import PREPROCESSING_FILE, SPLITS, npz_name
from titanic_lightning.data.csv_source import sha256_of
from titanic_lightning.errors import UsageError

NPZ_CONTENT_TYPE = "application/x-npz"
JSON_CONTENT_TYPE = "application/json"
SHA_KEY = "sha256"


def channel_files(data_dir: Path) -> dict[str, list[Path]]:
    """Channel name → the local files that go into it."""
    files = {name: [data_dir / npz_name(name)] for name in SPLITS}
    preprocessing = data_dir / PREPROCESSING_FILE
    if preprocessing.is_file():
        files["train"].append(preprocessing)
    return files


def ensure_prepared(data_dir: Path) -> Path:
    """Make sure `data_dir` has the three npz files, preparing them from the Titanic CSV if not."""
    missing = [p for p in (data_dir / npz_name(s) for s in SPLITS) if not p.is_file()]
    if missing:
        from titanic_lightning.data.csv_source import resolve_csv
        from titanic_lightning.data.prepare import check_prepare_outputs, prepare

        check_prepare_outputs(data_dir, "--data")
        csv = resolve_csv(None)
        description = prepare(csv, data_dir, flag="--data")
        log(f"prepared {data_dir}/ from {csv}: rows {description['rows']}")
    elif not (data_dir / PREPROCESSING_FILE).is_file():
        log(f"warning: no {PREPROCESSING_FILE} in {data_dir}; the model will not be able to score raw rows")
    return data_dir


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def upload_files(s3, files: list[Path], prefix_uri: str, content_type=None) -> dict[str, list[str]]:
    """Upload each file under `prefix_uri` unless the object there already holds the same content;
    return {"uploaded": [...], "unchanged": [...]}. `content_type(path)` names each file's type."""
    from botocore.exceptions import ClientError

    result: dict[str, list[str]] = {"uploaded": [], "unchanged": []}
    bucket, prefix = _split(prefix_uri)
    for path in files:
        key = prefix + path.name
        uri = f"s3://{bucket}/{key}"
        digest = sha256_of(path)
        try:
            existing = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get(SHA_KEY)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            existing = None
        if existing == digest:
            log(f"unchanged, not uploaded: {uri}")
            result["unchanged"].append(uri)
            continue
        extra = {"Metadata": {SHA_KEY: digest}}
        if content_type is not None:
            extra["ContentType"] = content_type(path)
        s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
        log(f"uploaded {path} -> {uri}")
        result["uploaded"].append(uri)
    return result


def upload_channels(s3, data_dir: Path, channels: dict[str, str]) -> dict[str, list[str]]:
    """Upload every channel's files under its S3 URI; return {"uploaded": [...], "unchanged": [...]}."""
    result: dict[str, list[str]] = {"uploaded": [], "unchanged": []}
    for name, files in channel_files(data_dir).items():
        done = upload_files(s3, files, channels[name],
                            lambda path: NPZ_CONTENT_TYPE if path.suffix == ".npz" else JSON_CONTENT_TYPE)
        for outcome in result:
            result[outcome] += done[outcome]
    return result


def check_data_dir(data_dir: Path) -> Path:
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: not a directory")
    return data_dir


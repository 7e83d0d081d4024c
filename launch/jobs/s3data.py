"""The job's data channels: prepare the npz files locally if missing, upload them to S3 once (each object
carries its sha256 in metadata, `x-amz-meta-sha256`, and is not uploaded again with the same content)."""

from __future__ import annotations

from pathlib import Path

from launch.console import log
from titanic_lightning.contracts import PREPROCESSING_FILE, SPLITS, npz_name
from titanic_lightning.data.csv_source import sha256_of
from titanic_lightning.errors import UsageError

CONTENT_TYPES = {".npz": "application/x-npz", ".json": "application/json"}  # else application/octet-stream


def channel_files(data_dir: Path) -> dict[str, list[Path]]:
    """Channel name → the local files that go into it."""
    files = {name: [data_dir / npz_name(name)] for name in SPLITS}
    if (data_dir / PREPROCESSING_FILE).is_file():
        files["train"].append(data_dir / PREPROCESSING_FILE)
    return files


def ensure_prepared(data_dir: Path) -> Path:
    """Make sure `data_dir` has the three npz files, preparing them from the Titanic CSV if not."""
    if not all((data_dir / npz_name(s)).is_file() for s in SPLITS):
        from titanic_lightning.data.csv_source import resolve_csv
        from titanic_lightning.data.prepare import check_prepare_outputs, prepare

        check_prepare_outputs(data_dir, "--data")
        csv = resolve_csv(None)
        description = prepare(csv, data_dir, flag="--data")
        log(f"prepared {data_dir}/ from {csv}: rows {description['rows']}")
    elif not (data_dir / PREPROCESSING_FILE).is_file():
        log(f"warning: no {PREPROCESSING_FILE} in {data_dir}; the model will not be able to score raw rows")
    return data_dir


def upload(s3, files: dict[str, list[Path]]) -> dict[str, list[str]]:
    """Upload each S3 prefix's files under it, skipping unchanged objects; {"uploaded": [...], "unchanged": [...]}."""
    from botocore.exceptions import ClientError

    result: dict[str, list[str]] = {"uploaded": [], "unchanged": []}
    for prefix_uri, paths in files.items():
        bucket, _, prefix = prefix_uri.removeprefix("s3://").partition("/")
        for path in paths:
            key, digest = prefix + path.name, sha256_of(path)
            uri = f"s3://{bucket}/{key}"
            try:
                existing = s3.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
                existing = None
            if existing == digest:
                log(f"unchanged, not uploaded: {uri}")
                result["unchanged"].append(uri)
                continue
            extra = {"Metadata": {"sha256": digest}, "ContentType": CONTENT_TYPES.get(path.suffix, "application/octet-stream")}
            s3.upload_file(str(path), bucket, key, ExtraArgs=extra)
            log(f"uploaded {path} -> {uri}")
            result["uploaded"].append(uri)
    return result


def check_data_dir(data_dir: Path) -> Path:
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(f"--data {data_dir}: not a directory")
    return data_dir

"""Where a trained model comes from: a model directory, a `model.pt`, a `model.tar.gz` (the model
directory packed, as a SageMaker training job uploads it), or an `s3://bucket/key` URI of one.
"""

from __future__ import annotations

import contextlib
import re
import tarfile
import zipfile
from pathlib import Path

from titanic_lightning.contracts import MODEL_FILE
from titanic_lightning.errors import UsageError

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")  # S3's bucket naming rules


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key), or a UsageError saying which part is wrong."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://"):
        why = "it does not start with s3://"
    elif not _BUCKET.fullmatch(bucket):
        why = (f"{bucket!r} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, "
               "starting and ending with a letter or digit)")
    elif not key or key.endswith("/"):
        why = "it names no object (the key after the bucket is empty or ends with /)"
    else:
        return bucket, key
    raise UsageError(f"{uri}: not an S3 object URI: {why}; expected s3://bucket/path/model.tar.gz")


def download_s3(uri: str, dest: Path) -> Path:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, key = parse_s3_uri(uri)
    target = dest / Path(key).name
    try:
        boto3.client("s3").download_file(bucket, key, str(target))
    except NoCredentialsError:
        raise UsageError(f"{uri}: no AWS credentials found to download it") from None
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        reason = {"404": "no such object", "NoSuchKey": "no such object", "NoSuchBucket": "no such object",
                  "403": "access denied", "AccessDenied": "access denied"}.get(code, f"download failed ({code or exc})")
        raise UsageError(f"{uri}: {reason}") from None
    return target


def extract_model(archive: Path, dest: Path, source: str) -> Path:
    """Unpack only `model.pt` from a SageMaker-style model.tar.gz (`./model.pt` or `model.pt`)."""
    try:
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and m.name.removeprefix("./") == MODEL_FILE), None)
            if member is None:
                raise UsageError(f"{source}: the archive holds no {MODEL_FILE}")
            # The "data" filter refuses links, absolute paths and escapes out of dest.
            tar.extract(member, dest, filter="data")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{source}: not a readable model archive ({' '.join(str(exc).split())[:200]})") from None
    return dest / member.name


def locate_model(spec: str, workdir: Path) -> tuple[Path, str]:
    """The local model.pt for `spec` and its name for messages; archives and downloads go to `workdir`."""
    if spec.startswith("s3:"):
        path = download_s3(spec, workdir)
    else:
        path = Path(spec)
        if path.is_dir():
            model_file = path / MODEL_FILE
            if not model_file.is_file():
                raise UsageError(f"{spec}: no {MODEL_FILE} in this directory")
            return model_file, str(model_file)
        if not path.is_file():
            raise UsageError(f"{spec}: no such file or directory")
    packed = False
    with contextlib.suppress(OSError):  # an unreadable file: loading it says so
        # torch.save writes a zip; anything else that tar can open is taken for a model.tar.gz.
        packed = not zipfile.is_zipfile(path) and tarfile.is_tarfile(path)
    if packed:
        return extract_model(path, workdir / "unpacked", spec), f"{spec} ({MODEL_FILE})"
    return path, spec

"""Find the Titanic CSV: `--csv PATH`, then `$TITANIC_CSV`, then the user cache, then a download of the
pandas project's copy of Kaggle's training file, pinned to a commit and checked against its sha256
before it is cached (a mismatch or a failed download is an error, never a silently used file).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from titanic_lightning import environment
from titanic_lightning.errors import UsageError, not_a_file
from titanic_lightning.io.atomic import atomic_output

DOWNLOAD_TIMEOUT_S = 30


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_csv(csv: str | os.PathLike | None = None, env=None) -> Path:
    """Return the path of a readable Titanic CSV, downloading and caching it if need be."""
    for given, named in ((csv, "--csv "), (environment.titanic_csv_from_env(env), "TITANIC_CSV=")):
        if given is not None:
            if not Path(given).is_file():
                raise UsageError(f"{named}{Path(given)}: {not_a_file(given)}")
            return Path(given)
    cached = environment.cache_dir(env) / "titanic.csv"
    if cached.is_file():
        return cached
    return download(environment.titanic_csv_url(env), cached)


def download(url: str, dest: Path, expected_sha256: str = environment.TITANIC_CSV_SHA256) -> Path:
    """Fetch `url`, verify its sha256, then move it into `dest` (never a partial file)."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"the Titanic CSV was not found and could not be downloaded from {url} ({reason}); "
                         f"provide it with --csv PATH, or TITANIC_CSV=PATH, or place it at {dest}") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected_sha256:
        raise UsageError(f"downloaded {url} has sha256 {actual}, expected {expected_sha256}; not using it "
                         "(provide the file with --csv PATH or TITANIC_CSV=PATH)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(dest) as tmp:
        tmp.write_bytes(payload)
    return dest

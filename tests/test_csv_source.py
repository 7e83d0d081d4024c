"""The CSV is found by flag, then TITANIC_CSV, then the cache, then a verified download."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tests.helpers import clean_env, run_entry
from titanic_lightning.data.csv_source import resolve_csv
from titanic_lightning.errors import UsageError


@pytest.fixture
def served(titanic_csv, tmp_path):
    """A loopback HTTP server with the real file at /titanic.csv and a corrupted one at /bad.csv."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "titanic.csv").write_bytes(titanic_csv.read_bytes())
    (root / "bad.csv").write_bytes(titanic_csv.read_bytes() + b"extra\n")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_flag_then_env_then_cache(tmp_path, titanic_csv):
    cache = tmp_path / "cache"
    env = {"TITANIC_CSV": str(titanic_csv), "XDG_CACHE_HOME": str(cache)}
    other = tmp_path / "other.csv"
    other.write_text("x\n")
    assert resolve_csv(other, env) == other
    assert resolve_csv(None, env) == titanic_csv
    cached = cache / "titanic-lightning" / "titanic.csv"
    cached.parent.mkdir(parents=True)
    cached.write_text("cached\n")
    assert resolve_csv(None, {"XDG_CACHE_HOME": str(cache)}) == cached
    with pytest.raises(UsageError, match="TITANIC_CSV=.*no such file"):
        resolve_csv(None, {"TITANIC_CSV": str(tmp_path / "missing.csv")})


def test_download_is_verified_then_cached(tmp_path, served, titanic_csv):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "TITANIC_CSV_URL": f"{served}/titanic.csv"}
    path = resolve_csv(None, env)
    assert path == tmp_path / "cache" / "titanic-lightning" / "titanic.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(titanic_csv.read_bytes()).hexdigest()


def test_hash_mismatch_is_an_error_and_nothing_is_cached(tmp_path, served):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "TITANIC_CSV_URL": f"{served}/bad.csv"}
    with pytest.raises(UsageError, match="sha256"):
        resolve_csv(None, env)
    cache = tmp_path / "cache" / "titanic-lightning"
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_with_nothing_found_names_the_three_ways(tmp_path):
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"), TITANIC_CSV_URL="http://127.0.0.1:9/titanic.csv")
    env.pop("TITANIC_CSV", None)
    result = run_entry("prepare", "--out", str(tmp_path / "d"), cwd=tmp_path, env=env)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "--csv PATH" in line and "TITANIC_CSV=PATH" in line and str(Path("titanic-lightning") / "titanic.csv") in line
    assert not (tmp_path / "d").exists()

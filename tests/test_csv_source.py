"""The CSV is found by flag, then TITANIC_CSV, then the cache, then a verified download."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env, run_entry
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


@pytest.mark.slow
def test_offline_with_nothing_found_names_the_three_ways(tmp_path):
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"), TITANIC_CSV_URL="http://127.0.0.1:9/titanic.csv")
    env.pop("TITANIC_CSV", None)
    result = run_entry("prepare", "--out", str(tmp_path / "d"), cwd=tmp_path, env=env)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "--csv PATH" in line and "TITANIC_CSV=PATH" in line and str(Path("titanic-lightning") / "titanic.csv") in line
    assert not (tmp_path / "d").exists()


# --- the suite finds the CSV as the commands do -------------------------------------------------

# Two quick tests that need the real CSV.
NEEDS_CSV = ["tests/test_csv_source.py::test_flag_then_env_then_cache", "tests/test_prepare.py::test_test_split_is_stratified"]


def _clone_alone(tmp_path: Path) -> Path:
    """The repository's files (tracked, and untracked but not ignored) in a folder with nothing beside
    it, so no data folder next to the repository can be found."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
    clone = tmp_path / "alone" / "repo"
    for name in filter(None, listing.split("\0")):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["repo"]
    return clone


def _suite_in(clone: Path, home: Path, *pytest_args: str) -> subprocess.CompletedProcess:
    """NEEDS_CSV run by pytest in `clone`, with HOME at `home`, no TITANIC_CSV or XDG_CACHE_HOME, and a
    download address that refuses at once (there may be no network)."""
    env = clean_env(PYTHONPATH=str(clone), HOME=str(home), TITANIC_CSV_URL="http://127.0.0.1:9/titanic.csv")
    for name in ("TITANIC_CSV", "XDG_CACHE_HOME", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *pytest_args, *NEEDS_CSV],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_suite_finds_the_csv_in_the_user_cache(tmp_path, titanic_csv):
    clone = _clone_alone(tmp_path)
    home = tmp_path / "home"
    cached = home / ".cache" / "titanic-lightning" / "titanic.csv"
    cached.parent.mkdir(parents=True)
    shutil.copy(titanic_csv, cached)
    result = _suite_in(clone, home)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert f"{len(NEEDS_CSV)} passed" in out and "skipped" not in out and "error" not in out.lower(), out


@pytest.mark.parametrize("workers", [pytest.param([], id="one process"),
                                     pytest.param(["-n", "2"], id="two workers", marks=pytest.mark.slow)])
def test_the_suite_without_the_csv_fails_naming_where_it_looked(workers, tmp_path):
    clone = _clone_alone(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    result = _suite_in(clone, home, *workers)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"{len(NEEDS_CSV)} error" in out and "passed" not in out and "skipped" not in out, out
    assert "this test needs the real Titanic CSV" in out
    for place in ("TITANIC_CSV (unset)", str(home / ".cache" / "titanic-lightning" / "titanic.csv"),
                  "http://127.0.0.1:9/titanic.csv"):
        assert place in out, place
    assert " the Titanic CSV ===" in out  # the summary's own section, once

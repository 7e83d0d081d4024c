"""Fixtures: the real Titanic CSV (TITANIC_CSV or ../shared/data), the real data prepared once,
and tiny synthetic channels."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import find_titanic_csv, write_channel


@pytest.fixture(scope="session")
def titanic_csv() -> Path:
    path = find_titanic_csv()
    if path is None:
        pytest.skip("the Titanic CSV is not available: set TITANIC_CSV to run this test")
    return path


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, titanic_csv) -> Path:
    """The real data prepared once (default feature set) for the whole session; treat as read-only."""
    from titanic_lightning.prepare import prepare

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

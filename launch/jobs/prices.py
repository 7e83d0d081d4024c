"""The dated on-demand price table (`launch/prices.json`, or the file `--prices FILE` names), and a job's
cost: AWS bills `BillableTimeInSeconds` per instance (already reduced by the discount under managed spot),
so the cost is billable seconds × instance count × on-demand hourly price / 3600."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from titanic_lightning.errors import UsageError

DEFAULT_PRICES = Path(__file__).parents[1] / "prices.json"


@dataclass(frozen=True)
class PriceTable:
    as_of: str
    usd_per_hour: dict[str, float]

    def hourly(self, instance_type: str) -> float | None:
        return self.usd_per_hour.get(instance_type)

    def job_cost(self, instance_type: str, instance_count: int, billable_seconds: float | None) -> float | None:
        price = self.hourly(instance_type)
        if price is None or billable_seconds is None:
            return None
        return round(billable_seconds * instance_count * price / 3600.0, 6)


def load(path: str | Path | None = None) -> PriceTable:
    path = Path(path) if path is not None else DEFAULT_PRICES
    try:
        data = json.loads(path.read_text())
        return PriceTable(as_of=str(data["as_of"]), usd_per_hour={str(k): float(v) for k, v in data["usd_per_hour"].items()})
    except FileNotFoundError:
        raise UsageError(f"--prices {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"--prices {path}: not a price table ({type(exc).__name__}: {exc}); expected "
                         '{"as_of": "YYYY-MM-DD", "usd_per_hour": {"ml.m5.large": 0.115, ...}}') from None


def table(prices: PriceTable | str | Path | None) -> PriceTable:
    """A price table as a function's `prices` argument gives it: a table, a file name, or None for the default."""
    return prices if isinstance(prices, PriceTable) else load(prices)

"""Prepare the npz channels from the Titanic CSV.

Run: `python -m entry.prepare [--csv CSV] [--out DIR] [--features basic|rich]`
(`--csv` defaults to `$TITANIC_CSV`, then the user cache, then a verified download.)
"""

from titanic_lightning.command import run_command


def main(argv: list[str]) -> None:
    from titanic_lightning.config import parse_prepare_args

    cfg = parse_prepare_args(argv)
    from pathlib import Path

    from titanic_lightning.data.csv_source import resolve_csv
    from titanic_lightning.data.prepare import check_prepare_outputs, prepare

    check_prepare_outputs(cfg.out, csv=Path(cfg.csv) if cfg.csv else None)
    csv = resolve_csv(cfg.csv)
    description = prepare(csv, cfg.out, cfg.features)
    rows = description["rows"]
    print(
        f"prepared {cfg.out}: train={rows['train']} val={rows['val']} test={rows['test']} rows, "
        f"{len(description['feature_names'])} {description['feature_set']} features, from {csv}"
    )


if __name__ == "__main__":
    run_command(main)

"""Export a trained model with its preprocessing constants as one self-contained file.

Run: `python -m entry.export --model model/ --format torchscript|onnx [--out FILE]`
The input contract (coded raw columns in, probability out) is in titanic_lightning/serving/export.py.
ONNX needs the optional extra: `pip install -e '.[onnx]'`.
"""

from titanic_lightning.command import run_command


def main(argv: list[str]) -> None:
    from titanic_lightning.config import parse_export_args

    cfg = parse_export_args(argv)
    import tempfile
    from pathlib import Path

    from titanic_lightning.io.outputs import check_output_file
    from titanic_lightning.serving.export import FORMATS, ROLE, export
    from titanic_lightning.serving.model_source import locate_model
    from titanic_lightning.serving.predict import model_inputs
    from titanic_lightning.serving.scoring import Scorer

    out = check_output_file(Path(cfg.out or f"titanic{FORMATS[cfg.format]}"), "--out", ROLE, model_inputs(cfg.model))
    with tempfile.TemporaryDirectory(prefix="titanic-model-") as workdir:
        scorer = Scorer.from_file(*locate_model(cfg.model, Path(workdir)))
    export(scorer, cfg.format, out)
    print(f"wrote {out} ({cfg.format}; input columns and category lists inside)")


if __name__ == "__main__":
    run_command(main)

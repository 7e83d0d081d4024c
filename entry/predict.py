"""Score Kaggle-format passenger rows with a trained model.

Run: `python -m entry.predict --model model/ --csv test.csv [--out predictions.csv]`
`--model` takes a model directory, its model.pt, a model.tar.gz or an s3://bucket/key URI of one.
Output: `PassengerId,probability,prediction` (standard output without --out); with a Survived
column, accuracy and AUROC too.
"""

from titanic_lightning.command import run_command


def main(argv: list[str]) -> None:
    from titanic_lightning.config import parse_predict_args

    cfg = parse_predict_args(argv)
    from titanic_lightning.serving.predict import run

    run(cfg)


if __name__ == "__main__":
    run_command(main)

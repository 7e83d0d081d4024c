"""Scoring raw passenger rows with a saved model, the one path of `entry.predict`, the serving handler
and export: `Scorer.from_file(Path("model/model.pt")).probabilities(df)`. The saved preprocessing is
applied exactly as at training time, then the saved MLP; a row survives when its probability is above
`THRESHOLD`, torchmetrics' rule, so accuracies computed here equal metrics.json's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from titanic_lightning.data.features import Preprocessor
from titanic_lightning.errors import UsageError
from titanic_lightning.io.artifacts import load_model_file
from titanic_lightning.model.network import MLP

THRESHOLD = 0.5
ID_COLUMN = "PassengerId"


class Scorer:
    """A saved model's preprocessing and network, from the dictionary stored in model.pt (see
    `titanic_lightning.io.artifacts`); `source` names the model in error messages."""

    def __init__(self, payload: dict, source: str):
        description = payload.get("preprocessing")
        if not description:
            raise UsageError(f"{source}: the model was saved without preprocessing, so it cannot score raw passenger rows; "
                             "retrain it with the preprocessing.json its training data was prepared with")
        self.preprocessor = Preprocessor.from_dict(description, source=f"{source} (preprocessing)")
        hparams = payload.get("hyperparameters") or {}
        try:
            self.net = MLP(int(hparams["input_size"]), list(hparams["hidden_sizes"]), float(hparams.get("dropout", 0.0)))
            self.net.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise UsageError(f"{source}: the saved network does not load ({' '.join(str(exc).split())[:200]})") from None
        if int(hparams["input_size"]) != len(self.preprocessor.feature_names):
            raise UsageError(f"{source}: the network takes {hparams['input_size']} features but its preprocessing "
                             f"makes {len(self.preprocessor.feature_names)}")
        bad = [name for name, tensor in self.net.state_dict().items() if not bool(torch.isfinite(tensor).all())]
        if bad:
            raise UsageError(f"{source}: the saved network has NaN or infinite weights ({', '.join(bad)})")
        self.net.eval()

    @classmethod
    def from_file(cls, path: Path, source: str | None = None) -> Scorer:
        source = source or str(path)
        try:
            payload = load_model_file(path)
        except UsageError as exc:
            # An unpacked or downloaded file sits in a temporary folder: name what the user gave.
            raise UsageError(str(exc).replace(str(path), source)) from None
        return cls(payload, source)

    @torch.inference_mode()
    def probabilities(self, df: pd.DataFrame, source: str = "rows") -> torch.Tensor:
        """Survival probability (float32) for every row of `df`."""
        return torch.sigmoid(self.net(torch.from_numpy(self.preprocessor.transform(df, source=source))).squeeze(-1))

    def score_frame(self, df: pd.DataFrame, source: str = "rows") -> pd.DataFrame:
        """`PassengerId` (when the rows have one), `probability` and `prediction` per row."""
        probabilities = self.probabilities(df, source)
        out = pd.DataFrame({"probability": probabilities.numpy().astype("float64"),
                            "prediction": (probabilities > THRESHOLD).to(torch.int64).numpy()})
        if ID_COLUMN in df.columns:
            out.insert(0, ID_COLUMN, df[ID_COLUMN].to_numpy())
        return out


def label_metrics(probabilities: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and AUROC computed by torchmetrics, as training computed test_acc and test_auroc."""
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc

    return {"accuracy": float(binary_accuracy(probabilities, labels, threshold=THRESHOLD)),
            "auroc": float(binary_auroc(probabilities, labels))}

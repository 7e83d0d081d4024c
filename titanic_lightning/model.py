"""The network (a plain `nn.Module` MLP) and the LightningModule that trains it."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score


class MLP(nn.Sequential):
    """Linear → ReLU (→ Dropout) per hidden layer, then one logit. No sigmoid: the loss has it."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int] = (64, 32), dropout: float = 0.0):
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)


class TitanicClassifier(pl.LightningModule):
    """Binary survival classifier: BCEWithLogitsLoss, Adam/AdamW, accuracy/AUROC/F1 per split.

    Args:
        input_size: Number of features (taken from the data).
        hidden_sizes: Widths of the hidden layers.
        dropout: Dropout after each hidden layer.
        learning_rate: Optimiser learning rate.
        weight_decay: Weight decay.
        optimizer: "adam" or "adamw".
        feature_names: Names of the input features, when known: a checkpoint from another
            feature set is then refused instead of silently resumed.
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int] = (64, 32), dropout: float = 0.0,
                 learning_rate: float = 1e-3, weight_decay: float = 0.0, optimizer: str = "adam",
                 feature_names: Sequence[str] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = MLP(input_size, hidden_sizes, dropout)
        self.loss_fn = nn.BCEWithLogitsLoss()
        # Metrics accumulate on the device and are reduced across ranks once per epoch; the loss
        # is a row-weighted mean so that uneven evaluation shards still give the exact average.
        self.train_loss = MeanMetric()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        scores = MetricCollection({"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})
        self.val_scores = scores.clone(prefix="val_")
        self.test_scores = scores.clone(prefix="test_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _evaluate(self, batch, loss_metric: MeanMetric, scores: MetricCollection, stage: str) -> None:
        x, y = batch
        logits = self(x)
        loss_metric.update(self.loss_fn(logits, y), weight=len(y))
        scores.update(torch.sigmoid(logits), y.int())
        self.log(f"{stage}_loss", loss_metric, on_step=False, on_epoch=True, batch_size=len(y))
        self.log_dict(scores, on_step=False, on_epoch=True, batch_size=len(y))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, self.val_loss, self.val_scores, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, self.test_loss, self.test_scores, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.sigmoid(self(x))

    # The random state travels with the checkpoint, so a resumed run draws what the uninterrupted
    # one would have (dropout); the data order depends only on seed and epoch already.
    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_state"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("rng_state") or {}
        if "cpu" in state:
            torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])

    def configure_optimizers(self):
        kind = torch.optim.AdamW if self.hparams.optimizer == "adamw" else torch.optim.Adam
        return kind(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

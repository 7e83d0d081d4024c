"""The LightningModule that trains the MLP (`titanic_lightning.model.network`): loss, optimiser, metrics."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryF1Score
from torchmetrics.utilities import dim_zero_cat

from titanic_lightning.model.network import MLP


class DefinedAUROC(BinaryAUROC):
    """BinaryAUROC, NaN where AUROC is undefined: labels of one class only (torchmetrics returns 0)."""

    def compute(self) -> torch.Tensor:
        target = dim_zero_cat(self.target)
        if target.numel() == 0 or bool(target.min() == target.max()):
            return torch.tensor(float("nan"), device=self.device)
        return super().compute()


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
        # No NaN check: it reads the loss back to the host on every step (a NaN still shows in the epoch value).
        self.train_loss = MeanMetric(nan_strategy="disable")
        scores = MetricCollection({"acc": BinaryAccuracy(), "auroc": DefinedAUROC(), "f1": BinaryF1Score()})
        self.scores = nn.ModuleDict({stage: scores.clone(prefix=f"{stage}_") for stage in ("val", "test")})
        # The evaluation loss is the mean of every row's loss, however unevenly the rows are sharded.
        self.eval_loss = nn.ModuleDict({stage: MeanMetric(nan_strategy="disable") for stage in ("val", "test")})
        self.epoch_open = False  # the running training epoch has trained a batch (its train_loss is logged)

    def configure_model(self):
        """Under `--strategy tensor_parallel` (Lightning's ModelParallelStrategy, which sets the device
        mesh): split the network over the mesh (`titanic_lightning.model.parallel`), once."""
        from titanic_lightning.model.parallel import is_parallelized, parallelize

        mesh = self.device_mesh
        if mesh is None or is_parallelized(self.net):
            return
        parallelize(self.net, mesh)
        # The processes of a tensor-parallel group score the same rows: metrics are reduced over the
        # data-parallel processes only, so no row counts twice.
        group = mesh["data_parallel"].get_group()
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.process_group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    # Each metric is logged as a torchmetrics object once per epoch: Lightning computes (over every
    # rank) and resets it at the epoch's end. Every self.log call costs about 0.4 ms, a tenth of a
    # CPU step and more than a GPU step, so it is not repeated on every batch.
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.train_loss.update(loss)
        if not self.epoch_open:
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True)
            self.epoch_open = True
        return loss

    def _shared_eval_step(self, batch, batch_idx: int, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.eval_loss[stage].update(nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none"))
        self.scores[stage].update(torch.sigmoid(logits), y.int())
        if batch_idx == 0:
            self.log(f"{stage}_loss", self.eval_loss[stage], on_epoch=True)
            self.log_dict(self.scores[stage], on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._shared_eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._shared_eval_step(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.sigmoid(self(x))

    def configure_optimizers(self):
        kind = torch.optim.AdamW if self.hparams.optimizer == "adamw" else torch.optim.Adam
        return kind(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

    # A run stopped inside an epoch resumes exactly: the random state (dropout) travels with the
    # checkpoint, and so does the running training loss of the epoch, summed over every rank (only
    # global rank 0 writes the file); on resume data-parallel rank 0 takes the sum back, the others start at 0.
    def on_train_epoch_end(self):
        self.epoch_open = False  # Lightning's epoch-end checkpoint comes after this hook

    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_state"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        if self.epoch_open:
            with self.train_loss.sync_context():
                checkpoint["train_loss_state"] = {k: v.cpu() for k, v in self.train_loss.metric_state.items()}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("rng_state") or {}
        if "cpu" in state:
            torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.train_loss.reset()
        dist = torch.distributed
        group = self.train_loss.process_group
        rank = dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0
        if "train_loss_state" in checkpoint and rank == 0:
            for name, value in checkpoint["train_loss_state"].items():
                setattr(self.train_loss, name, value.to(self.train_loss.device))

"""The LightningModule that trains the MLP (`titanic_lightning.network`): loss, optimiser, metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.functional.classification import binary_auroc, binary_stat_scores
from torchmetrics.utilities.distributed import gather_all_tensors

from titanic_lightning.network import MLP

# How often, at most, the loggers save what they were given during training (they always save at
# the end of fit, on success, failure or SIGTERM).
LOGGER_SAVE_SECONDS = 10.0


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
        # The training loss is the mean of the epoch's batch losses, accumulated on the device and
        # reduced across ranks once per epoch, without MeanMetric's NaN check: that check reads the
        # value back, a device sync on every step (a NaN loss still shows in the epoch value).
        self.train_loss = MeanMetric(nan_strategy="disable")
        # An evaluation epoch keeps its logits and labels (AUROC needs every score anyway) and
        # scores them once at its end, over every data-parallel rank's rows (`_epoch_values`):
        # the loss is then the exact mean over all rows, however unevenly they were sharded.
        self._eval_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        # The processes the evaluation rows are spread over (None: the whole world, if any).
        self._data_parallel_group = None
        self._last_logger_save = -float("inf")
        # Optimisation is written out in training_step (several steps per call); Lightning's
        # automatic loop would take one step per call, through a closure.
        self.automatic_optimization = False
        # Rows per optimizer step (the run's batch size); None: one step per training batch. Not a
        # hyperparameter: it does not change what a step computes, only how batches arrive.
        self.rows_per_step: int | None = None

    def configure_model(self):
        """Under `--strategy tensor_parallel` (Lightning's ModelParallelStrategy, which sets the device
        mesh): split the network over the mesh (`titanic_lightning.parallel`). Lightning calls this
        before fit, validate and test; the network is split once."""
        from titanic_lightning.parallel import is_parallelized, parallelize

        mesh = self.device_mesh
        if mesh is None or is_parallelized(self.net):
            return
        parallelize(self.net, mesh)
        # The processes of a tensor-parallel group score the same rows: each metric is reduced over
        # the data-parallel processes only, so no row counts twice.
        self._data_parallel_group = self.train_loss.process_group = mesh["data_parallel"].get_group()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        """One optimizer step per `rows_per_step` rows of the batch, in order: a batch holding
        several steps' rows (`TitanicDataModule(steps_per_call=...)`) trains exactly as those
        batches one at a time would, while Lightning's per-batch work runs once for all of them."""
        x, y = batch
        optimizer = self.optimizers()
        size = self.rows_per_step or len(y)
        losses = []
        for xs, ys in zip(x.split(size), y.split(size)):
            loss = self.loss_fn(self(xs), ys)
            optimizer.zero_grad(set_to_none=True)
            # Lightning's backward: under DDP it prepares the gradient all-reduce for this backward.
            self.manual_backward(loss)
            optimizer.step()
            losses.append(loss.detach())
        # The epoch's training loss stays the mean of its steps' losses, read back once per epoch.
        losses = torch.stack(losses)
        self.train_loss.update(losses)
        return losses  # this call's step losses, in order (for callbacks; nothing is stepped on them)

    def _evaluate(self, batch) -> None:
        x, y = batch
        self._eval_outputs.append((self(x), y))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch)

    def _gathered_outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation epoch's (logits, labels) from every data-parallel rank, in rank order;
        the kept outputs are released."""
        outputs, self._eval_outputs = self._eval_outputs, []
        if outputs:
            logits, labels = (torch.cat(parts) for parts in zip(*outputs))
        else:  # a rank whose shard is empty (more processes than rows)
            logits = labels = torch.zeros(0, device=self.device)
        group = self._data_parallel_group
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
            # torchmetrics' own gather (the one its metrics sync with): shards may differ in length.
            logits, labels = (torch.cat(gather_all_tensors(t.contiguous(), group)) for t in (logits, labels))
        return logits, labels

    # Values are logged once per epoch, reduced over ranks: computed once, read back to the host in
    # one transfer, and shared by the loggers and the callbacks.
    def _epoch_values(self, stage: str, with_train_loss: bool = False) -> dict[str, torch.Tensor]:
        logits, labels = self._gathered_outputs()
        scores, targets = torch.sigmoid(logits), labels.int()
        # The inputs need no checking: labels are checked to be 0/1 when the data is loaded, and
        # the scores are sigmoids.
        # Accuracy and F1 as torchmetrics' BinaryAccuracy and BinaryF1Score reduce the same counts
        # (F1 is 0 when there is neither a positive label nor a positive prediction).
        tp, fp, tn, fn, _ = binary_stat_scores(scores, targets, validate_args=False).unbind()
        f1_denominator = 2 * tp + fp + fn
        values = {f"{stage}_loss": self.loss_fn(logits, labels),
                  f"{stage}_acc": (tp + tn) / len(targets),
                  f"{stage}_auroc": binary_auroc(scores, targets, validate_args=False),
                  f"{stage}_f1": torch.where(f1_denominator > 0, 2 * tp / f1_denominator.clamp_min(1), 0.0)}
        if with_train_loss:
            values = {"train_loss": self.train_loss.compute(), **values}
            self.train_loss.reset()
        return dict(zip(values, torch.stack([v.float() for v in values.values()]).cpu().unbind()))

    def _publish(self, values: dict[str, torch.Tensor]) -> None:
        """Hand a training epoch's values to the callbacks and the loggers directly, as Lightning's
        LearningRateMonitor does: `self.log` costs more than the epoch itself on small data (Lightning
        moves its stored result to the device on every call), and Lightning saves every logger after
        each logging call. Here the loggers write one row per epoch and save at most every
        LOGGER_SAVE_SECONDS (and when the run ends)."""
        trainer = self.trainer
        trainer.callback_metrics.update(values)
        trainer.logged_metrics.update(values)
        row = {**dict(zip(values, torch.stack(list(values.values())).tolist())), "epoch": trainer.current_epoch}
        now = time.monotonic()
        save = now - self._last_logger_save >= LOGGER_SAVE_SECONDS
        for logger in trainer.loggers:
            # The step Lightning's own logging gives an epoch's values (LearningRateMonitor's too).
            logger.log_metrics(row, step=trainer.fit_loop.epoch_loop._batches_that_stepped)
            if save:
                logger.save()
        if save:
            self._last_logger_save = now

    def on_validation_epoch_end(self):
        if self.trainer.state.fn != "fit":
            self.log_dict(self._epoch_values("val"))
        elif self.trainer.sanity_checking:
            self._eval_outputs = []
        else:
            # Validation closes every training epoch, so the epoch's training loss is complete here.
            self._publish(self._epoch_values("val", with_train_loss=True))

    def on_test_epoch_end(self):
        self.log_dict(self._epoch_values("test"))

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.sigmoid(self(x))

    # The random state travels with the checkpoint, so a resumed run draws what the uninterrupted
    # one would have (dropout); the data order depends only on seed and epoch already. So does every
    # rank's share of the epoch's training loss so far (gathered: only rank 0 writes the file), so a
    # run resumed inside an epoch reports that epoch's loss over all of its batches.
    def on_save_checkpoint(self, checkpoint):
        checkpoint["rng_state"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_state"]["cuda"] = torch.cuda.get_rng_state_all()
        share = torch.stack([self.train_loss.mean_value, self.train_loss.weight])
        checkpoint["train_loss_shares"] = self.all_gather(share).reshape(-1, 2).cpu()

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("rng_state") or {}
        if "cpu" in state:
            torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        shares = checkpoint.get("train_loss_shares")
        if shares is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            # Another world size: the whole sum goes to rank 0, so the reduced value is still right.
            share = shares[rank] if len(shares) == world else shares.sum(0) if rank == 0 else torch.zeros(2)
            device = self.train_loss.mean_value.device
            self.train_loss.mean_value, self.train_loss.weight = share[0].to(device), share[1].to(device)

    def configure_optimizers(self):
        kind = torch.optim.AdamW if self.hparams.optimizer == "adamw" else torch.optim.Adam
        return kind(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)

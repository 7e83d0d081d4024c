"""Lightning's own floor on the lesson workload: a bare Trainer doing the same epochs as the
project's training, with nothing of its own around them.

The lesson's 7-64-32-1 network, BCEWithLogitsLoss and Adam; one full batch per epoch, already in
memory (a one-item dataset, no collation); a validation pass every epoch with one `self.log` per
epoch (the validation loss); no logger, no checkpoint, no progress bar, no model summary, no
sanity check. What the project adds on top of this (its metrics, logs, callbacks, checkpoints)
is the difference `bench.run` reports.

Run: `python -m bench.lightning_bare --data DIR --epochs 1000`
"""

from __future__ import annotations

import argparse
import json
import time

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Bare(pl.LightningModule):
    def __init__(self, features: int, learning_rate: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.learning_rate = learning_rate

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.net(x).squeeze(-1), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", self.loss_fn(self.net(x).squeeze(-1), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


def full_batch(data: str, split: str) -> DataLoader:
    """One batch holding the whole split: a one-item dataset of the stacked tensors, uncollated."""
    with np.load(f"{data}/{split}_data.npz") as npz:
        X = torch.from_numpy(npz[f"X_{split}"]).float()
        y = torch.from_numpy(npz[f"y_{split}"].astype(np.float32))
    return DataLoader(TensorDataset(X[None], y[None]), batch_size=None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    train, val = full_batch(args.data, "train"), full_batch(args.data, "val")
    model = Bare(train.dataset.tensors[0].shape[-1], args.learning_rate)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(model, train, val)
    fit_seconds = time.perf_counter() - started
    print(json.dumps({"fit_seconds": fit_seconds, "val_loss": float(trainer.callback_metrics["val_loss"])}))


if __name__ == "__main__":
    main()

"""A typical Lightning setup, for comparison: `DataLoader(TensorDataset)` with shuffling, per-step
`self.log`, the validation loss logged per step, everything else Lightning's defaults (progress bar
off, as in a batch job). The same 7-64-32-1 network, loss and optimiser as the project's model.

Run: `python -m bench.lightning_template --data DIR --epochs 2 --batch_size 4096` (a batch size at
least the training split's is full-batch training).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Template(pl.LightningModule):
    def __init__(self, features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
        self.loss_fn = nn.BCEWithLogitsLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x).squeeze(-1)
        self.log("val_loss", self.loss_fn(logits, y))
        self.log("val_acc", ((logits > 0).float() == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def dataset(data: str, split: str) -> TensorDataset:
    with np.load(f"{data}/{split}_data.npz") as npz:
        return TensorDataset(torch.from_numpy(npz[f"X_{split}"]), torch.from_numpy(npz[f"y_{split}"].astype(np.float32)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--accelerator", default="cpu")
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    train, val = dataset(args.data, "train"), dataset(args.data, "val")
    batch = min(args.batch_size, len(train))
    model = Template(train.tensors[0].shape[1])
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator=args.accelerator, devices=1, default_root_dir=logs,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        started = time.perf_counter()
        trainer.fit(model, DataLoader(train, batch_size=batch, shuffle=True), DataLoader(val, batch_size=batch))
        fit_seconds = time.perf_counter() - started
    print(json.dumps({"fit_seconds": fit_seconds, "train_rows_per_second": len(train) * args.epochs / fit_seconds,
                      "val_loss": float(trainer.callback_metrics["val_loss"])}))


if __name__ == "__main__":
    main()

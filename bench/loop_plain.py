"""Throughput limit: a plain PyTorch loop over tensors held in memory (no Lightning, no DataLoader).

Per epoch: a random permutation, batches cut by indexing, forward/backward/Adam step, then one
validation pass. The same 7-64-32-1 network and BCEWithLogitsLoss as the project's model.

Run: `python -m bench.loop_plain --data DIR --epochs 2 --batch_size 4096 [--device cpu|cuda]`
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    arrays = {}
    for split in ("train", "val"):
        with np.load(f"{args.data}/{split}_data.npz") as npz:
            arrays[split] = (torch.from_numpy(npz[f"X_{split}"]).to(device),
                             torch.from_numpy(npz[f"y_{split}"].astype(np.float32)).to(device))
    (X, y), (Xv, yv) = arrays["train"], arrays["val"]
    model = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for index in torch.randperm(len(y), device=device).split(args.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[index]).squeeze(-1), y[index])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(Xv).squeeze(-1), yv).item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - started
    print(json.dumps({"fit_seconds": fit_seconds, "train_rows_per_second": len(y) * args.epochs / fit_seconds,
                      "val_loss": val_loss}))


if __name__ == "__main__":
    main()

"""The lesson's training script, in plain PyTorch, as the reference for `bench.run`.

What the lesson's `train_nn.py` does: a 7-64-32-1 MLP with a sigmoid and BCELoss, Adam, full-batch
training (one step per epoch over all training rows), a validation pass every epoch, a print every
100 epochs, the final state_dict saved. For the comparison it also reports test accuracy of the
final weights.

Run: `python -m bench.lesson_plain --train T --val V --test T --epochs 1000 --learning_rate 0.001`
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn


def load(path: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as npz:
        return torch.tensor(npz[f"X_{split}"], dtype=torch.float32), torch.tensor(npz[f"y_{split}"], dtype=torch.float32)


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning_rate", type=float, default=0.001)
    parser.add_argument("--model", default="nn_model.pth")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    X, y = (t.to(device) for t in load(args.train, "train"))
    Xv, yv = (t.to(device) for t in load(args.val, "val"))
    model = nn.Sequential(nn.Linear(X.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1),
                          nn.Sigmoid()).to(device)
    criterion = nn.BCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    fit_started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        optimizer.zero_grad()
        loss = criterion(model(X).squeeze(-1), y)
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(Xv).squeeze(-1)
            val_loss = criterion(out, yv)
            val_acc = ((out > 0.5).float() == yv).float().mean()
        if (epoch + 1) % 100 == 0:
            print(f"Epoch [{epoch + 1}/{args.epochs}], Loss: {loss.item():.4f}, "
                  f"Val Loss: {val_loss.item():.4f}, Val Accuracy: {val_acc.item():.4f}")
    fit_seconds = time.perf_counter() - fit_started
    torch.save(model.state_dict(), args.model)
    Xt, yt = (t.to(device) for t in load(args.test, "test"))
    with torch.no_grad():
        test_acc = ((model(Xt).squeeze(-1) > 0.5).float() == yt).float().mean().item()
    print(f"validation:accuracy = {val_acc.item():.4f}")
    print(json.dumps({"test_acc": test_acc, "fit_seconds": fit_seconds, "wall_seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()

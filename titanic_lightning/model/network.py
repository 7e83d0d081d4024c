"""The network: a plain `nn.Module` MLP, with no Lightning in sight.

Kept apart from the LightningModule so that whatever only scores (the serving handler, exports)
needs nothing but torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


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

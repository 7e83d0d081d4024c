"""A DDP strategy that records what each rank did, for the data-parallel proofs.

Used as `--strategy tests.ddp_probe:factory` (the pluggable-strategy hook). Each rank writes
`<PROBE_DIR>/rank<global_rank>.json` at the end of fit: the training rows it saw per epoch (row ids
travel as feature column 0 of the synthetic data), its step count, and its final parameters.

`--strategy tests.ddp_probe:sigterm_factory` instead sends every rank's process SIGTERM right after
training step `$STOP_AT_STEP`: a stop that lands at the same batch on every rank.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from lightning.pytorch.strategies import DDPStrategy

from titanic_lightning.training.strategies import process_group_kwargs


class ProbeDDP(DDPStrategy):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rows: dict[int, list[int]] = {}
        self.steps = 0

    def training_step(self, *args, **kwargs):
        batch = args[0]
        epoch = self.lightning_module.current_epoch
        self.rows.setdefault(epoch, []).extend(batch[0][:, 0].round().long().tolist())
        self.steps += 1
        return super().training_step(*args, **kwargs)

    def on_train_end(self):
        super().on_train_end()
        params = {k: v.detach().cpu().flatten().tolist() for k, v in self.lightning_module.net.state_dict().items()}
        out = Path(os.environ["PROBE_DIR"]) / f"rank{self.global_rank}.json"
        out.write_text(json.dumps({"rank": self.global_rank, "world_size": self.world_size, "steps": self.steps,
                                   "rows": self.rows, "params": params}))


def factory(plan):
    return ProbeDDP(**process_group_kwargs(plan))


class SigtermAtStep(DDPStrategy):
    def training_step(self, *args, **kwargs):
        output = super().training_step(*args, **kwargs)
        # training_step runs before its optimizer step: global_step counts the steps before this one.
        if self.lightning_module.global_step + 1 == int(os.environ["STOP_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGTERM)
        return output


def sigterm_factory(plan):
    return SigtermAtStep(**process_group_kwargs(plan))

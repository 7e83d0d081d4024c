"""Strategies that record what each rank did, for the tensor-parallel proofs.

Used as `--strategy tests.tp_probe:tensor_parallel` (Lightning's ModelParallelStrategy as
`--strategy tensor_parallel` builds it, with `$TP_SIZE` processes per tensor-parallel group),
`tests.tp_probe:ddp` or `tests.tp_probe:single`. Each rank writes `<PROBE_DIR>/rank<global_rank>.json`
at the end of fit: its loss at every training step, the row ids it trained on (feature column 0),
and the local shape and global shape of every parameter it holds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, SingleDeviceStrategy

from titanic_lightning.environment import TENSOR_PARALLEL
from titanic_lightning.training.strategies import REGISTRY, process_group_kwargs


class Probe:
    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        # The model returns the loss of this step.
        self.__dict__.setdefault("losses", []).extend(torch.as_tensor(loss).flatten().tolist())
        self.__dict__.setdefault("rows", []).extend(args[0][0][:, 0].round().long().tolist())
        return loss

    def on_train_end(self):
        super().on_train_end()
        from torch.distributed.tensor import DTensor

        shapes = {}
        for name, p in self.lightning_module.net.named_parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            shapes[name] = {"local": list(local.shape), "global": list(p.shape), "dtensor": isinstance(p, DTensor)}
        out = Path(os.environ["PROBE_DIR"]) / f"rank{self.global_rank}.json"
        out.write_text(json.dumps({"rank": self.global_rank, "world_size": self.world_size,
                                   "losses": self.__dict__.get("losses", []), "rows": self.__dict__.get("rows", []),
                                   "shapes": shapes}))


class ProbeModelParallel(Probe, ModelParallelStrategy):
    pass


class ProbeDDP(Probe, DDPStrategy):
    pass


class ProbeSingle(Probe, SingleDeviceStrategy):
    pass


def tensor_parallel(plan):
    built = REGISTRY[TENSOR_PARALLEL](dataclasses.replace(plan, strategy=TENSOR_PARALLEL,
                                                          tensor_parallel_size=int(os.environ["TP_SIZE"])))
    probe = ProbeModelParallel.__new__(ProbeModelParallel)
    probe.__dict__.update(built.__dict__)  # the strategy `--strategy tensor_parallel` builds, recording as well
    return probe


def ddp(plan):
    return ProbeDDP(**process_group_kwargs(plan))


def single(plan):
    return ProbeSingle(device=torch.device("cpu"))

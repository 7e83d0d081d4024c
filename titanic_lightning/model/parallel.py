"""Tensor parallelism for the MLP (`--strategy tensor_parallel`): which Linear layers are split, how,
and the full weights gathered back from the shards.

The plan pairs the network's Linear layers, as Megatron-LM does: the first of each pair is split by
output features (`ColwiseParallel`: each process computes its slice of the hidden units, no
communication), the second by input features (`RowwiseParallel`: each process multiplies its slice,
then one all-reduce sums the partial outputs). So each pair costs one all-reduce forward and one
backward, and only the first layer's width must divide among the processes. With an odd number of
Linear layers the last one (the output, a single logit) is left whole on every process: its one
output cannot be split, and it is a few dozen weights. A Dropout between the layers of a pair sees
only this process's slice of the hidden units; `SliceDropout` draws the mask for the whole width
(the same on every process of the group, which share their random state) and keeps its slice, so
the run drops exactly the units one process would have dropped.

Over the data-parallel dimension of the mesh the model is sharded with FSDP2 (`fully_shard`), when
that dimension has more than one process. Nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from titanic_lightning.errors import UsageError

FLAG = "--tensor_parallel_size"


def split_widths(hidden_sizes: Sequence[int]) -> list[int]:
    """Indices (0-based) of the hidden layers whose units the plan splits: the first of each Linear pair."""
    # Linear layer i produces hidden layer i; pairs start at the even layers, and a last unpaired
    # Linear is the output layer.
    return list(range(0, len(hidden_sizes), 2))


def check_widths(hidden_sizes: Sequence[int], tensor_parallel_size: int) -> None:
    """A `UsageError` naming the first split width that `tensor_parallel_size` does not divide."""
    for i in split_widths(hidden_sizes):
        width = hidden_sizes[i]
        if width % tensor_parallel_size:
            raise UsageError(
                f"{FLAG} {tensor_parallel_size} does not divide {width}, the width of hidden layer {i + 1} of "
                f"--hidden_sizes {list(hidden_sizes)}: tensor parallelism splits that layer's units evenly "
                f"among {tensor_parallel_size} processes"
            )


class SliceDropout(nn.Module):
    """Dropout on this process's slice (`index` of `parts`) of the hidden units, with the mask a single
    process would draw for all of them."""

    def __init__(self, p: float, index: int, parts: int):
        super().__init__()
        self.p, self.index, self.parts = p, index, parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        width = x.shape[-1] * self.parts
        # What F.dropout does on CPU: a Bernoulli mask of the input's shape, scaled by 1 / (1 - p).
        mask = torch.empty(*x.shape[:-1], width, dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * mask.narrow(-1, self.index * x.shape[-1], x.shape[-1]).div_(1 - self.p)


def tensor_parallel_plan(net: nn.Sequential) -> dict[str, object]:
    """{child name: ColwiseParallel() or RowwiseParallel()} for the Linear layers of `net`, paired."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel

    linears = [name for name, module in net.named_children() if isinstance(module, nn.Linear)]
    plan: dict[str, object] = {}
    for first, second in zip(linears[0::2], linears[1::2]):
        plan[first], plan[second] = ColwiseParallel(), RowwiseParallel()
    return plan


def is_parallelized(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def parallelize(net: nn.Sequential, mesh) -> nn.Sequential:
    """Split `net` over the mesh's "tensor_parallel" dimension, then shard it with FSDP2 over its
    "data_parallel" dimension when that has more than one process. Returns `net`, changed in place."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

    tp_mesh, dp_mesh = mesh["tensor_parallel"], mesh["data_parallel"]
    if tp_mesh.size() > 1:
        plan = tensor_parallel_plan(net)
        parallelize_module(net, tp_mesh, plan)
        # A Dropout after a column-wise layer (and its ReLU) sees only this process's units.
        split = False
        for name, module in list(net.named_children()):
            if isinstance(module, nn.Linear):
                split = isinstance(plan.get(name), ColwiseParallel)
            elif isinstance(module, nn.Dropout) and split:
                setattr(net, name, SliceDropout(module.p, tp_mesh.get_local_rank(), tp_mesh.size()))
    if dp_mesh.size() > 1:
        fully_shard(net, mesh=dp_mesh)
    return net


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights, whole, on every process: a copy, gathered from the shards of a
    parallelized module (a collective then: every process of the mesh must call it)."""
    if is_parallelized(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
        return {k: v.detach().clone() for k, v in state.items()}
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole weights (as `full_state_dict` returns them) into the module, each process keeping its shard."""
    if is_parallelized(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))
    else:
        module.load_state_dict(state)

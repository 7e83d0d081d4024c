"""Distribution strategies by name.

| name          | what it is                                             | where it runs                  |
|---------------|--------------------------------------------------------|--------------------------------|
| `auto`        | one process; becomes `ddp` when the plan has several   | anywhere                       |
| `ddp`         | data parallel, gradients all-reduced every step         | CPU (gloo) or GPU (nccl)       |
| `ddp_smddp`   | `ddp` over SageMaker's smddp collectives               | SageMaker GPU instances only   |
| `fsdp`        | sharded data parallel: parameters, gradients and       | GPU only (nccl)                |
|               | optimizer state split, each process the whole model    |                                |
| `tensor_parallel` | model parallel: each layer split among a node's     | CPU (gloo) or GPU (nccl)       |
|               | processes (`titanic_lightning.model.parallel`), data parallel |                                |
|               | (FSDP2) across nodes: Lightning's ModelParallelStrategy |                                |
| `pkg.mod:fn`  | `fn(plan)` returns any Lightning `Strategy`            | wherever it says               |
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable
from datetime import timedelta

from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy, Strategy

from titanic_lightning.environment import TENSOR_PARALLEL
from titanic_lightning.errors import UsageError
from titanic_lightning.training.cluster import Plan

SMDDP_MODULE = "smdistributed.dataparallel.torch.torch_smddp"


def process_group_kwargs(plan: Plan) -> dict:
    """Backend and timeout: what every process-group strategy is built with. (The cluster
    environment reaches the strategy from the Trainer's plugins: `titanic_lightning.training.cluster`.)"""
    return {
        "process_group_backend": plan.backend,
        "timeout": timedelta(seconds=plan.process_group_timeout_s),
    }


def _ddp(plan: Plan) -> Strategy:
    return DDPStrategy(**process_group_kwargs(plan))


def _ddp_smddp(plan: Plan) -> Strategy:
    if importlib.util.find_spec("smdistributed") is None or importlib.util.find_spec(SMDDP_MODULE) is None:
        raise UsageError(
            "--strategy ddp_smddp needs SageMaker's data-parallel library (smdistributed.dataparallel), "
            "which only SageMaker's GPU training images on supported instances provide; use --strategy ddp"
        )
    if plan.accelerator != "gpu":
        raise UsageError("--strategy ddp_smddp runs on GPU instances only; use --strategy ddp on CPU")
    importlib.import_module(SMDDP_MODULE)  # registers the "smddp" process-group backend
    return DDPStrategy(**{**process_group_kwargs(plan), "process_group_backend": "smddp"})


def _fsdp(plan: Plan) -> Strategy:
    if plan.accelerator != "gpu":
        raise UsageError("--strategy fsdp shards the model across GPUs: Lightning runs it on CUDA devices only; "
                         "use --strategy ddp on CPU")
    return FSDPStrategy(**process_group_kwargs(plan))


def _tensor_parallel(plan: Plan) -> Strategy:
    # A gathered last.ckpt (one file, written by rank 0 through SameFolderCheckpointIO) rather than
    # Lightning's default folder of shards: training/checkpoints.py reads, checks and atomically replaces one file,
    # SageMaker syncs it, and a run with another number of processes can still continue from it.
    return ModelParallelStrategy(
        data_parallel_size=plan.data_parallel_size, tensor_parallel_size=plan.tensor_parallel_size,
        save_distributed_checkpoint=False, **process_group_kwargs(plan),
    )


REGISTRY: dict[str, Callable[[Plan], Strategy]] = {"ddp": _ddp, "ddp_smddp": _ddp_smddp, "fsdp": _fsdp,
                                                   TENSOR_PARALLEL: _tensor_parallel}


def _custom(spec: str) -> Callable[[Plan], Strategy]:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--strategy {spec}: cannot load {attr!r} from {module_name!r} ({exc})") from None
    if not callable(factory):
        raise UsageError(f"--strategy {spec}: {attr!r} is not callable")
    return factory


def _call_factory(spec: str, factory: Callable[[Plan], Strategy], plan: Plan) -> object:
    """`factory(plan)`; a factory that cannot take the plan, or fails, is a mistake in --strategy."""
    try:
        inspect.signature(factory).bind(plan)
    except TypeError as exc:
        raise UsageError(f"--strategy {spec}: the factory must take one argument, the plan ({exc})") from None
    except ValueError:  # no signature to inspect (some builtins): calling it is the only check
        pass
    try:
        return factory(plan)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory may raise anything
        raise UsageError(f"--strategy {spec}: the factory raised {type(exc).__name__}: {' '.join(str(exc).split())}") from None


def build_strategy(plan: Plan) -> Strategy | str:
    """The Lightning strategy (object) the plan names; "auto" for a single process."""
    name = plan.strategy
    if name == "auto":
        return "auto"
    if ":" in name:
        strategy = _call_factory(name, _custom(name), plan)
        if not isinstance(strategy, Strategy):
            kind = type(strategy).__name__
            raise UsageError(f"--strategy {name}: the factory returned {kind}, not a Lightning Strategy")
        return strategy
    if name not in REGISTRY:
        raise UsageError(f"--strategy {name}: unknown; choose auto, {', '.join(REGISTRY)}, or package.module:factory")
    return REGISTRY[name](plan)

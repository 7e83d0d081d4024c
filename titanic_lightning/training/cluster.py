"""Where this process sits in a run, and the Trainer plan that follows from it.

Lightning's own cluster environments recognise torchrun (`TorchElasticEnvironment`) and SLURM
(`SLURMEnvironment`, in a step started by `srun`); `SageMakerEnvironment` adds SageMaker's hosts;
anything else is a plain process (`LightningEnvironment`, which starts `--cpu_processes` itself).
The first that recognises the process decides the accelerator, devices per node and nodes; the
command line's `--accelerator`, `--devices`, `--num_nodes` and `--strategy` override it. The chosen
environment goes to the Trainer as a plugin, so Lightning uses exactly the one the plan was made from.

    python -m entry.train                                  # local: one GPU, else the CPU
    python -m entry.train --cpu_processes 2                # local: 2 CPU processes (DDP, gloo)
    torchrun --nproc_per_node=2 -m entry.train             # torchrun
    srun -N2 --ntasks-per-node=2 python -m entry.train     # SLURM: 2 nodes x 2 processes
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.fabric.utilities.rank_zero import rank_zero_only

from titanic_lightning import environment, sagemaker_facts
from titanic_lightning.environment import DEFAULT_PROCESS_GROUP_TIMEOUT_S, TENSOR_PARALLEL, env_int, sagemaker_hosts
from titanic_lightning.errors import UsageError


class SageMakerEnvironment(ClusterEnvironment):
    """A SageMaker training host (`SM_HOSTS`, `SM_CURRENT_HOST`, `SM_MASTER_ADDR`/`PORT`).

    SageMaker starts one process per host; Lightning starts the host's others (`processes_per_host`:
    one per GPU, `SM_NUM_GPUS`, or `--cpu_processes`). Node rank is the host's index among the
    sorted hosts, the main address `SM_MASTER_ADDR`, else the first host.
    """

    def __init__(self, processes_per_host: int = 1):
        super().__init__()
        hosts = sagemaker_hosts(os.environ)
        current = os.environ.get("SM_CURRENT_HOST", hosts[0])
        if current not in hosts:
            raise UsageError(f"SM_CURRENT_HOST={current!r} is not one of SM_HOSTS={hosts}")
        self._hosts, self._node_rank, self._per_host = hosts, hosts.index(current), processes_per_host
        self._world_size = len(hosts) * processes_per_host
        # What the strategy will set: rank-aware code that runs before it does sees the right rank.
        self._global_rank = self._node_rank * processes_per_host + self.local_rank()

    @property
    def creates_processes_externally(self) -> bool:
        # As LightningEnvironment decides: a process with LOCAL_RANK was started by a launcher
        # (Lightning's, in the host's first process) and must not launch again.
        return "LOCAL_RANK" in os.environ

    @property
    def main_address(self) -> str:
        return os.environ.get("SM_MASTER_ADDR") or self._hosts[0]

    @property
    def main_port(self) -> int:
        return env_int(os.environ, "SM_MASTER_PORT", sagemaker_facts.MASTER_PORT)

    @staticmethod
    def detect() -> bool:
        return bool(os.environ.get("SM_HOSTS"))

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        self._world_size = size

    def global_rank(self) -> int:
        return self._global_rank

    def set_global_rank(self, rank: int) -> None:
        self._global_rank = rank
        rank_zero_only.rank = rank

    def local_rank(self) -> int:
        return int(os.environ.get("LOCAL_RANK", 0))

    def node_rank(self) -> int:
        return self._node_rank

    @property
    def hosts(self) -> int:
        return len(self._hosts)


def _in_srun_step() -> bool:
    # Lightning's own check, less its opt-out for interactive job names: any `srun` step with several
    # tasks is one run. A batch script's own shell (no step) is a plain process, as it runs one task.
    return "SLURM_STEP_ID" in os.environ and "SLURM_NTASKS" in os.environ


LAUNCHERS = (  # the first that recognises the process wins
    ("torchrun", TorchElasticEnvironment.detect),
    ("slurm", _in_srun_step),
    ("sagemaker", SageMakerEnvironment.detect),
    ("local", lambda: True),
)


@dataclass(frozen=True)
class Plan:
    """Where and how this process trains: what the Trainer and the strategy are built from."""

    launcher: str  # "torchrun", "slurm", "sagemaker" or "local"
    accelerator: str  # "cpu" or "gpu"
    devices: int  # processes per node
    num_nodes: int
    strategy: str  # a name from titanic_lightning.training.strategies, or "package.module:factory"
    backend: str | None  # process-group backend; None for a single process
    cluster: ClusterEnvironment = field(compare=False, repr=False)
    process_group_timeout_s: int = DEFAULT_PROCESS_GROUP_TIMEOUT_S
    env_updates: dict[str, str] = field(default_factory=dict)
    tensor_parallel_size: int | None = None  # processes that split each layer (strategy tensor_parallel)

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def data_parallel_size(self) -> int:
        """Processes that train on different batches: the world, less tensor parallelism's groups."""
        return self.world_size // (self.tensor_parallel_size or 1)


def _launched_shape(launcher: str) -> tuple[int, int, str]:
    """(processes per node, nodes, the variable that fixes their product) of a launcher whose
    processes all exist already."""
    env = os.environ
    if launcher == "torchrun":
        world = env_int(env, "WORLD_SIZE")
        per_node = env_int(env, "LOCAL_WORLD_SIZE", world)
        if per_node < 1 or world % per_node:
            raise UsageError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={per_node}")
        return per_node, world // per_node, "torchrun's WORLD_SIZE"
    tasks, nodes = env_int(env, "SLURM_NTASKS"), env_int(env, "SLURM_NNODES", 1)
    if "SLURM_NTASKS_PER_NODE" not in env:
        if tasks > 1:  # Lightning needs the count per node; srun derives it only when asked
            raise UsageError(f"srun started {tasks} tasks without --ntasks-per-node: use srun --ntasks-per-node=N "
                             "(N processes per node, one per GPU), as Lightning's SLURM environment requires")
        return 1, 1, "SLURM_NTASKS"
    per_node = env_int(env, "SLURM_NTASKS_PER_NODE", 1, leading=True)
    if per_node * nodes != tasks:
        raise UsageError(f"SLURM_NTASKS={tasks} is not SLURM_NTASKS_PER_NODE={per_node} x SLURM_NNODES={nodes}")
    return per_node, nodes, "SLURM_NTASKS"


def make_plan(
    cuda_devices: int,
    *,
    accelerator: str | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    strategy: str | None = None,
    cpu_processes: int = 1,
    process_group_timeout_s: int = DEFAULT_PROCESS_GROUP_TIMEOUT_S,
    tensor_parallel_size: int | None = None,
) -> Plan:
    """The plan for this process (its environment, and the number of visible CUDA devices).

    With strategy `tensor_parallel`, `--tensor_parallel_size` processes (default: those of a node)
    split each layer, and the world's remaining factor trains data parallel.
    """
    launcher = next(name for name, detect in LAUNCHERS if detect())
    found_accelerator = "gpu" if cuda_devices > 0 else "cpu"
    fixed = None
    if launcher in ("torchrun", "slurm"):
        found_devices, found_nodes, fixed = _launched_shape(launcher)
    elif launcher == "sagemaker":
        gpus = env_int(os.environ, "SM_NUM_GPUS", cuda_devices)
        found_accelerator = "gpu" if gpus > 0 else "cpu"
        found_devices, found_nodes = gpus or cpu_processes, len(sagemaker_hosts(os.environ))
    else:
        found_devices, found_nodes = (1 if cuda_devices > 0 else cpu_processes), 1

    chosen_accelerator = accelerator if accelerator not in (None, "auto") else found_accelerator
    if chosen_accelerator == "cuda":
        chosen_accelerator = "gpu"
    if chosen_accelerator == "gpu" and cuda_devices == 0:
        raise UsageError("--accelerator gpu was asked for, but no CUDA device is visible")
    chosen_devices = devices if devices is not None else found_devices
    chosen_nodes = num_nodes if num_nodes is not None else found_nodes
    world = chosen_devices * chosen_nodes
    if fixed and world != found_devices * found_nodes:
        raise UsageError(f"--devices {chosen_devices} x --num_nodes {chosen_nodes} does not match {fixed}="
                         f"{found_devices * found_nodes}")
    chosen_strategy = strategy if strategy not in (None, "auto") else ("ddp" if world > 1 else "auto")
    if tensor_parallel_size is not None and chosen_strategy != TENSOR_PARALLEL:
        raise UsageError(f"--tensor_parallel_size {tensor_parallel_size}: used only with --strategy {TENSOR_PARALLEL}")
    if chosen_strategy == TENSOR_PARALLEL:
        tensor_parallel_size = tensor_parallel_size or chosen_devices
        if world % tensor_parallel_size:
            raise UsageError(
                f"--tensor_parallel_size {tensor_parallel_size}: does not divide the {world} process(es) of this run "
                f"({chosen_devices} per node x {chosen_nodes} node(s)) into tensor-parallel groups"
            )
    cluster = {"torchrun": TorchElasticEnvironment, "slurm": lambda: SLURMEnvironment(auto_requeue=False),
               "sagemaker": lambda: SageMakerEnvironment(chosen_devices), "local": LightningEnvironment}[launcher]()
    return Plan(
        launcher=launcher,
        accelerator=chosen_accelerator,
        devices=chosen_devices,
        num_nodes=chosen_nodes,
        strategy=chosen_strategy,
        backend=("nccl" if chosen_accelerator == "gpu" else "gloo") if world > 1 or chosen_strategy != "auto" else None,
        cluster=cluster,
        process_group_timeout_s=process_group_timeout_s,
        env_updates=environment.socket_interface_updates(os.environ),
        tensor_parallel_size=tensor_parallel_size,
    )

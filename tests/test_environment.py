"""The plan is a pure function of the environment: tables of env dicts in, Trainer plans out."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from titanic_lightning import environment
from titanic_lightning.errors import UsageError
from titanic_lightning.training.cluster import SageMakerEnvironment, make_plan
from titanic_lightning.training.strategies import build_strategy

SM_TWO_CPU_HOSTS = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0",
                    "SM_NUM_CPUS": "4", "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "7777"}


def slurm(tasks_per_node: int, nodes: int, rank: int, nodelist: str = "node-[3-4]", **extra: str) -> dict[str, str]:
    """What `srun -N<nodes> --ntasks-per-node=<tasks_per_node>` gives the task of global rank `rank`."""
    return {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_STEP_ID": "0", "SLURM_NODELIST": nodelist,
            "SLURM_NTASKS": str(tasks_per_node * nodes), "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
            "SLURM_NNODES": str(nodes), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % tasks_per_node),
            "SLURM_NODEID": str(rank // tasks_per_node), **extra}


def plan_in(env: dict[str, str], cuda: int = 0, **overrides):
    """make_plan in exactly this environment; with the cluster environment's view of the process
    (read while that environment is in place: Lightning's environments read os.environ)."""
    with mock.patch.dict(os.environ, env, clear=True):
        plan = make_plan(cuda, **overrides)
        cluster = plan.cluster
        seen = {"launcher": plan.launcher, "accelerator": plan.accelerator, "devices": plan.devices,
                "num_nodes": plan.num_nodes, "strategy": plan.strategy, "backend": plan.backend,
                "env_updates": plan.env_updates, "process_group_timeout_s": plan.process_group_timeout_s,
                "cluster": type(cluster).__name__}
        if plan.launcher != "local":
            seen.update(node_rank=cluster.node_rank(), main_address=cluster.main_address, main_port=cluster.main_port,
                        world_size=cluster.world_size(), global_rank=cluster.global_rank(), local_rank=cluster.local_rank())
    return plan, seen


TORCHRUN_2X4 = {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
                "MASTER_ADDR": "algo-1", "MASTER_PORT": "7777", "TORCHELASTIC_RUN_ID": "x"}

PLANS = [
    # (case, env, cuda devices, overrides, expected)
    ("nothing, no CUDA", {}, 0, {},
     dict(launcher="local", accelerator="cpu", devices=1, num_nodes=1, strategy="auto", backend=None,
          cluster="LightningEnvironment")),
    ("nothing, CUDA", {}, 2, {}, dict(launcher="local", accelerator="gpu", devices=1, num_nodes=1, strategy="auto")),
    ("local CPU processes", {}, 0, {"cpu_processes": 2},
     dict(launcher="local", accelerator="cpu", devices=2, strategy="ddp", backend="gloo")),
    ("torchrun 2x4", TORCHRUN_2X4, 4, {},
     dict(launcher="torchrun", accelerator="gpu", devices=4, num_nodes=2, node_rank=1, strategy="ddp",
          backend="nccl", main_address="algo-1", main_port=7777, global_rank=5, local_rank=1, world_size=8,
          cluster="TorchElasticEnvironment")),
    ("torchrun on CPU", {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                         "TORCHELASTIC_RUN_ID": "x"}, 0, {},
     dict(launcher="torchrun", accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", backend="gloo")),
    ("torchrun inside a SLURM allocation", {**slurm(1, 1, 0), **TORCHRUN_2X4}, 0, {},
     dict(launcher="torchrun", devices=4, num_nodes=2)),
    ("SLURM 1 node x 2 tasks, rank 1", slurm(2, 1, 1, nodelist="vm"), 0, {},
     dict(launcher="slurm", accelerator="cpu", devices=2, num_nodes=1, node_rank=0, strategy="ddp", backend="gloo",
          main_address="vm", global_rank=1, local_rank=1, world_size=2, cluster="SLURMEnvironment")),
    ("SLURM 2 nodes x 2 tasks, rank 3", slurm(2, 2, 3), 0, {},
     dict(launcher="slurm", devices=2, num_nodes=2, node_rank=1, global_rank=3, local_rank=1, world_size=4,
          main_address="node-3", strategy="ddp", backend="gloo")),
    ("SLURM 2 nodes x 2 tasks, rank 0, nodes listed by name", slurm(2, 2, 0, nodelist="gpu-a,gpu-b"), 0, {},
     dict(node_rank=0, global_rank=0, main_address="gpu-a")),
    ("SLURM 3 GPU nodes x 4, rank 9", slurm(4, 3, 9, nodelist="g[01-03]"), 4, {},
     dict(launcher="slurm", accelerator="gpu", devices=4, num_nodes=3, node_rank=2, global_rank=9, local_rank=1,
          world_size=12, main_address="g01", strategy="ddp", backend="nccl")),
    ("SLURM interactive job name, srun step", slurm(2, 1, 0, SLURM_JOB_NAME="interactive"), 0, {},
     dict(launcher="slurm", devices=2)),
    ("SLURM one task", slurm(1, 1, 0), 0, {}, dict(launcher="slurm", devices=1, num_nodes=1, strategy="auto")),
    ("SLURM batch shell (no srun step)", {k: v for k, v in slurm(2, 1, 0).items() if k != "SLURM_STEP_ID"}, 0, {},
     dict(launcher="local", devices=1, num_nodes=1, strategy="auto")),
    # Lightning's port: 15000 + the job id's last 4 digits
    ("SLURM main port from the job id", slurm(2, 1, 0), 0, {}, dict(main_port=15000 + 4242)),
    ("SageMaker 1 CPU host", {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1", "SM_NUM_GPUS": "0"}, 0, {},
     dict(launcher="sagemaker", accelerator="cpu", devices=1, num_nodes=1, strategy="auto", backend=None,
          cluster="SageMakerEnvironment")),
    ("SageMaker 2 CPU hosts", SM_TWO_CPU_HOSTS, 0, {},
     dict(launcher="sagemaker", accelerator="cpu", devices=1, num_nodes=2, node_rank=1, strategy="ddp",
          backend="gloo", main_address="algo-1", main_port=7777, global_rank=1, world_size=2)),
    ("SageMaker 2 CPU hosts x 2 processes", SM_TWO_CPU_HOSTS, 0, {"cpu_processes": 2},
     dict(devices=2, num_nodes=2, global_rank=2, world_size=4)),
    ("SageMaker GPU host", {"SM_HOSTS": '["algo-1","algo-2","algo-3"]', "SM_CURRENT_HOST": "algo-3",
                            "SM_NUM_GPUS": "4"}, 4, {},
     dict(launcher="sagemaker", accelerator="gpu", devices=4, num_nodes=3, node_rank=2, strategy="ddp",
          backend="nccl", main_address="algo-1", main_port=7777, global_rank=8, world_size=12)),
    ("SageMaker host under torchrun", {**SM_TWO_CPU_HOSTS, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0",
                                       "LOCAL_WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "x"}, 0, {},
     dict(launcher="torchrun", devices=1, num_nodes=2)),
    ("flags override", SM_TWO_CPU_HOSTS, 0, {"devices": 3, "num_nodes": 1, "strategy": "ddp", "accelerator": "cpu"},
     dict(devices=3, num_nodes=1, strategy="ddp", backend="gloo")),
    ("network interface", {"SM_HOSTS": '["algo-1"]', "SM_NETWORK_INTERFACE_NAME": "eth7",
                           "NCCL_SOCKET_IFNAME": "keep"}, 0, {},
     dict(env_updates={"GLOO_SOCKET_IFNAME": "eth7"})),
    ("timeout", {}, 0, {"process_group_timeout_s": 42}, dict(process_group_timeout_s=42)),
]


@pytest.mark.parametrize(("case", "env", "cuda", "overrides", "expected"), PLANS, ids=[p[0] for p in PLANS])
def test_plan_from_environment(case, env, cuda, overrides, expected):
    _, seen = plan_in(env, cuda, **overrides)
    assert {k: seen.get(k) for k in expected} == expected


def test_world_size_is_devices_times_nodes():
    assert plan_in(SM_TWO_CPU_HOSTS, cpu_processes=3)[0].world_size == 6
    assert plan_in(slurm(2, 2, 0))[0].world_size == 4


@pytest.mark.parametrize(
    ("env", "cuda", "overrides", "message"),
    [
        ({"SM_HOSTS": "algo-1"}, 0, {}, "SM_HOSTS"),
        ({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-9"}, 0, {}, "SM_CURRENT_HOST='algo-9'"),
        ({"WORLD_SIZE": "3", "RANK": "0", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}, 0, {}, "not a multiple"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}, 0, {"devices": 4},
         "does not match torchrun"),
        ({}, 0, {"accelerator": "gpu"}, "no CUDA device"),
        ({"SM_HOSTS": '["algo-1"]', "SM_NUM_GPUS": "x"}, 0, {}, "SM_NUM_GPUS='x'"),
        ({k: v for k, v in slurm(2, 1, 0).items() if k != "SLURM_NTASKS_PER_NODE"}, 0, {},
         "srun started 2 tasks without --ntasks-per-node"),
        (slurm(2, 2, 0), 0, {"devices": 3}, "--devices 3 x --num_nodes 2 does not match SLURM_NTASKS=4"),
        ({**slurm(2, 2, 0), "SLURM_NTASKS": "5"}, 0, {}, "SLURM_NTASKS=5 is not SLURM_NTASKS_PER_NODE=2 x SLURM_NNODES=2"),
        ({**slurm(2, 1, 0), "SLURM_NNODES": "two"}, 0, {}, "SLURM_NNODES='two' is not an integer"),
    ],
)
def test_bad_environments_are_named(env, cuda, overrides, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        plan_in(env, cuda, **overrides)


def test_overriding_the_shape_of_a_slurm_step_keeps_its_world():
    assert plan_in(slurm(2, 2, 0), devices=1, num_nodes=4)[0].world_size == 4


def test_the_plans_cluster_environment_reaches_the_trainer(monkeypatch):
    """The plan's environment is the Trainer's: given as a plugin, Lightning uses it, not its own guess."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch import Trainer

    # The Trainer sets the process-wide rank_zero_only.rank to its rank (1 here): restored afterwards,
    # or every later run in this process would skip what only rank 0 does (the loggers' saves among it).
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    with mock.patch.dict(os.environ, slurm(2, 1, 1), clear=True):
        plan = make_plan(0)
        trainer = Trainer(accelerator=plan.accelerator, devices=plan.devices, num_nodes=plan.num_nodes,
                          strategy=build_strategy(plan), plugins=[plan.cluster], logger=False)
        assert trainer.strategy.cluster_environment is plan.cluster
        assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 1, 1)


def test_sagemaker_cluster_environment(monkeypatch):
    with mock.patch.dict(os.environ, SM_TWO_CPU_HOSTS, clear=True):  # the host's first process, as SageMaker starts it
        plan = make_plan(0, cpu_processes=2)
        strategy = build_strategy(plan)
        assert isinstance(strategy, DDPStrategy)
        cluster = plan.cluster
        assert isinstance(cluster, SageMakerEnvironment) and not cluster.creates_processes_externally
        assert (cluster.main_address, cluster.main_port, cluster.node_rank(), cluster.world_size()) == ("algo-1", 7777, 1, 4)
        assert (cluster.local_rank(), cluster.global_rank()) == (0, 2)
        assert strategy._timeout.total_seconds() == 300 and strategy._process_group_backend == "gloo"


def test_sagemaker_cluster_environment_in_a_launched_process(monkeypatch):
    """The host's second process, started by Lightning with LOCAL_RANK=1, must not launch again."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 0)
    with mock.patch.dict(os.environ, {**SM_TWO_CPU_HOSTS, "LOCAL_RANK": "1"}, clear=True):
        cluster = make_plan(0, cpu_processes=2).cluster
        assert cluster.creates_processes_externally
        assert (cluster.local_rank(), cluster.node_rank(), cluster.global_rank(), cluster.world_size()) == (1, 1, 3, 4)
        cluster.set_global_rank(3)
    assert rank_zero_only.rank == 3


def make_plan_here(**overrides):
    return plan_in({}, **overrides)[0]


def test_strategy_registry_errors():
    cpu_two = make_plan_here(cpu_processes=2, strategy="ddp")
    with pytest.raises(UsageError, match="unknown; choose auto, ddp, ddp_smddp, fsdp"):
        build_strategy(make_plan_here(strategy="horovod"))
    with pytest.raises(UsageError, match="cannot load 'nope' from 'tests.ddp_probe'"):
        build_strategy(make_plan_here(strategy="tests.ddp_probe:nope"))
    with pytest.raises(UsageError, match="not a Lightning Strategy"):
        build_strategy(make_plan_here(strategy="builtins:repr"))
    with pytest.raises(UsageError, match="CUDA devices only"):
        build_strategy(make_plan_here(cpu_processes=2, strategy="fsdp"))
    assert build_strategy(make_plan_here()) == "auto"
    assert isinstance(build_strategy(cpu_two), DDPStrategy)


@pytest.mark.skipif(importlib.util.find_spec("smdistributed") is not None, reason="smdistributed is installed here")
def test_smddp_without_its_library_says_so():
    with pytest.raises(UsageError, match="smdistributed.dataparallel.*only SageMaker's GPU training images"):
        build_strategy(make_plan_here(strategy="ddp_smddp"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP runs on CUDA devices only and no GPU is visible")
def test_fsdp_strategy_builds_on_gpu():
    from lightning.pytorch.strategies import FSDPStrategy

    assert isinstance(build_strategy(plan_in({}, torch.cuda.device_count(), strategy="fsdp")[0]), FSDPStrategy)


def test_checkpoint_directory_defaults(tmp_path, monkeypatch):
    sagemaker_dir = tmp_path / "opt-ml-checkpoints"
    monkeypatch.setattr(environment, "SAGEMAKER_CHECKPOINT_DIR", sagemaker_dir)
    assert environment.default_checkpoint_dir({}) is None  # not on SageMaker: no checkpoints unless asked
    sagemaker_dir.mkdir()
    assert environment.default_checkpoint_dir({}) == sagemaker_dir
    assert environment.default_checkpoint_dir({"TITANIC_CHECKPOINT_DIR": ""}) == sagemaker_dir
    assert environment.default_checkpoint_dir({"TITANIC_CHECKPOINT_DIR": "/tmp/ck"}) == Path("/tmp/ck")


@pytest.mark.parametrize("env, expected", [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"RANK": "3", "LOCAL_RANK": "1"}, False),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}, True),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}, False),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "LOCAL_RANK": "1"}, False),  # a batch script's --cpu_processes child
    ({"LOCAL_RANK": "1"}, False),  # a process Lightning started for local rank 1
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ({"SM_HOSTS": '["algo-1","algo-2"]', "SM_CURRENT_HOST": "algo-2"}, False),
    ({"SM_HOSTS": '["algo-2","algo-1"]', "SM_CURRENT_HOST": "algo-1"}, True),
])
def test_only_global_rank_zero_is_the_writer(env, expected):
    assert environment.is_global_zero(env) is expected

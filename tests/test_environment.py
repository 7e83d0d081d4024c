"""The plan is a pure function of the environment: tables of env dicts in, Trainer plans out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from titanic_lightning import environment
from titanic_lightning.environment import make_plan
from titanic_lightning.errors import UsageError
from titanic_lightning.strategies import SageMakerEnvironment, build_strategy

SM_TWO_CPU_HOSTS = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "0",
                    "SM_NUM_CPUS": "4", "SM_MASTER_ADDR": "algo-1", "SM_MASTER_PORT": "7777"}

PLANS = [
    # (case, env, cuda devices, overrides, expected fields)
    ("nothing, no CUDA", {}, 0, {},
     dict(launcher="local", accelerator="cpu", devices=1, num_nodes=1, strategy="auto", backend=None)),
    ("nothing, CUDA", {}, 2, {}, dict(launcher="local", accelerator="gpu", devices=1, num_nodes=1, strategy="auto")),
    ("local CPU processes", {}, 0, {"cpu_processes": 2},
     dict(launcher="local", accelerator="cpu", devices=2, strategy="ddp", backend="gloo")),
    ("torchrun 2x4", {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1",
                      "MASTER_ADDR": "algo-1", "MASTER_PORT": "7777", "TORCHELASTIC_RUN_ID": "x"}, 4, {},
     dict(launcher="torchrun", accelerator="gpu", devices=4, num_nodes=2, node_rank=1, strategy="ddp",
          backend="nccl", main_address="algo-1", main_port=7777)),
    ("torchrun on CPU", {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}, 0, {},
     dict(launcher="torchrun", accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", backend="gloo")),
    ("SageMaker 1 CPU host", {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1", "SM_NUM_GPUS": "0"}, 0, {},
     dict(launcher="sagemaker", accelerator="cpu", devices=1, num_nodes=1, strategy="auto", backend=None)),
    ("SageMaker 2 CPU hosts", SM_TWO_CPU_HOSTS, 0, {},
     dict(launcher="sagemaker", accelerator="cpu", devices=1, num_nodes=2, node_rank=1, strategy="ddp",
          backend="gloo", main_address="algo-1", main_port=7777)),
    ("SageMaker 2 CPU hosts x 2 processes", SM_TWO_CPU_HOSTS, 0, {"cpu_processes": 2},
     dict(devices=2, num_nodes=2)),
    ("SageMaker GPU host", {"SM_HOSTS": '["algo-1","algo-2","algo-3"]', "SM_CURRENT_HOST": "algo-3",
                            "SM_NUM_GPUS": "4"}, 4, {},
     dict(launcher="sagemaker", accelerator="gpu", devices=4, num_nodes=3, node_rank=2, strategy="ddp",
          backend="nccl", main_address="algo-1", main_port=7777)),
    ("flags override", SM_TWO_CPU_HOSTS, 0, {"devices": 3, "num_nodes": 1, "strategy": "ddp", "accelerator": "cpu"},
     dict(devices=3, num_nodes=1, strategy="ddp", backend="gloo")),
    ("network interface", {"SM_HOSTS": '["algo-1"]', "SM_NETWORK_INTERFACE_NAME": "eth7",
                           "NCCL_SOCKET_IFNAME": "keep"}, 0, {},
     dict(env_updates={"GLOO_SOCKET_IFNAME": "eth7"})),
    ("timeout", {}, 0, {"process_group_timeout_s": 42}, dict(process_group_timeout_s=42)),
]


@pytest.mark.parametrize(("case", "env", "cuda", "overrides", "expected"), PLANS, ids=[p[0] for p in PLANS])
def test_plan_from_environment(case, env, cuda, overrides, expected):
    plan = make_plan(env, cuda, **overrides)
    for key, value in expected.items():
        assert getattr(plan, key) == value, key


def test_world_size_is_devices_times_nodes():
    assert make_plan(SM_TWO_CPU_HOSTS, 0, cpu_processes=3).world_size == 6


@pytest.mark.parametrize(
    ("env", "cuda", "overrides", "message"),
    [
        ({"SM_HOSTS": "algo-1"}, 0, {}, "SM_HOSTS"),
        ({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-9"}, 0, {}, "SM_CURRENT_HOST='algo-9'"),
        ({"WORLD_SIZE": "3", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}, 0, {}, "not a multiple"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}, 0, {"devices": 4}, "does not match torchrun"),
        ({}, 0, {"accelerator": "gpu"}, "no CUDA device"),
        ({"SM_HOSTS": '["algo-1"]', "SM_NUM_GPUS": "x"}, 0, {}, "SM_NUM_GPUS='x'"),
    ],
)
def test_bad_environments_are_named(env, cuda, overrides, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        make_plan(env, cuda, **overrides)


@pytest.mark.parametrize(("env", "launcher"), [
    ({}, "local"),
    ({"SM_HOSTS": '["algo-1"]'}, "sagemaker"),
    ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "1"}, "torchrun"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "2"}, "torchrun"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "local"),  # not all of torchrun's variables: a plain process
    ({**SM_TWO_CPU_HOSTS, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_WORLD_SIZE": "1"}, "torchrun"),  # torchrun on a host
])
def test_the_first_detector_that_recognises_the_launcher_reads_it(env, launcher):
    detectors = [d for d in environment.DETECTORS if d.detect(env)]
    assert detectors[0].name == launcher and detectors[-1] is environment.PlainProcess
    assert environment.detect(env, 0).launcher == launcher


def test_a_new_launcher_is_one_detector(monkeypatch):
    class Slurm:
        name = "slurm"

        @staticmethod
        def detect(env):
            return "SLURM_NTASKS" in env

        @classmethod
        def read(cls, env, cuda_devices, cpu_processes):
            tasks, per_node = int(env["SLURM_NTASKS"]), int(env["SLURM_NTASKS_PER_NODE"])
            return environment.Detected(cls.name, "cpu", per_node, tasks // per_node, int(env["SLURM_NODEID"]),
                                        "node-0", 6000, fixed_world_size="SLURM_NTASKS")

    monkeypatch.setattr(environment, "DETECTORS", (Slurm, *environment.DETECTORS))
    env = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "1"}
    plan = make_plan(env, 0)
    assert (plan.launcher, plan.devices, plan.num_nodes, plan.node_rank, plan.strategy, plan.backend) == \
        ("slurm", 2, 2, 1, "ddp", "gloo")
    assert (plan.main_address, plan.main_port) == ("node-0", 6000)
    assert make_plan(env, 0, devices=1, num_nodes=4).world_size == 4  # the override step applies to it too
    with pytest.raises(UsageError, match="does not match SLURM_NTASKS=4"):
        make_plan(env, 0, devices=3)
    assert make_plan({}, 0).launcher == "local"


def test_sagemaker_cluster_environment(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # the host's first process, as SageMaker starts it
    plan = make_plan(SM_TWO_CPU_HOSTS, 0, cpu_processes=2)
    strategy = build_strategy(plan)
    assert isinstance(strategy, DDPStrategy)
    cluster = strategy.cluster_environment
    assert isinstance(cluster, SageMakerEnvironment) and not cluster.creates_processes_externally
    assert (cluster.main_address, cluster.main_port, cluster.node_rank(), cluster.world_size()) == ("algo-1", 7777, 1, 4)
    assert (cluster.local_rank(), cluster.global_rank()) == (0, 2)
    assert strategy._timeout.total_seconds() == 300 and strategy._process_group_backend == "gloo"


def test_sagemaker_cluster_environment_in_a_launched_process(monkeypatch):
    """The host's second process, started by Lightning with LOCAL_RANK=1, must not launch again."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    cluster = build_strategy(make_plan(SM_TWO_CPU_HOSTS, 0, cpu_processes=2)).cluster_environment
    assert cluster.creates_processes_externally
    assert (cluster.local_rank(), cluster.node_rank(), cluster.global_rank(), cluster.world_size()) == (1, 1, 3, 4)
    cluster.set_global_rank(3)
    assert rank_zero_only.rank == 3


def test_strategy_registry_errors():
    cpu_two = make_plan({}, 0, cpu_processes=2, strategy="ddp")
    with pytest.raises(UsageError, match="unknown; choose auto, ddp, ddp_smddp, fsdp"):
        build_strategy(make_plan({}, 0, strategy="horovod"))
    with pytest.raises(UsageError, match="cannot load 'nope' from 'tests.ddp_probe'"):
        build_strategy(make_plan({}, 0, strategy="tests.ddp_probe:nope"))
    with pytest.raises(UsageError, match="not a Lightning Strategy"):
        build_strategy(make_plan({}, 0, strategy="builtins:repr"))
    with pytest.raises(UsageError, match="CUDA devices only"):
        build_strategy(make_plan({}, 0, cpu_processes=2, strategy="fsdp"))
    assert build_strategy(make_plan({}, 0)) == "auto"
    assert isinstance(build_strategy(cpu_two), DDPStrategy)


@pytest.mark.skipif(importlib.util.find_spec("smdistributed") is not None, reason="smdistributed is installed here")
def test_smddp_without_its_library_says_so():
    with pytest.raises(UsageError, match="smdistributed.dataparallel.*only SageMaker's GPU training images"):
        build_strategy(make_plan({}, 0, strategy="ddp_smddp"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP runs on CUDA devices only and no GPU is visible")
def test_fsdp_strategy_builds_on_gpu():
    from lightning.pytorch.strategies import FSDPStrategy

    assert isinstance(build_strategy(make_plan({}, torch.cuda.device_count(), strategy="fsdp")), FSDPStrategy)


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
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, True),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, False),
    ({"LOCAL_RANK": "1"}, False),  # a process Lightning started for local rank 1
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ({"SM_HOSTS": '["algo-1","algo-2"]', "SM_CURRENT_HOST": "algo-2"}, False),
    ({"SM_HOSTS": '["algo-2","algo-1"]', "SM_CURRENT_HOST": "algo-1"}, True),
])
def test_only_global_rank_zero_is_the_writer(env, expected):
    assert environment.is_global_zero(env) is expected

"""The all-reduce share of a DDP training step on CPU: the project's network under DDP (gloo), two
processes of one thread each, batch 4096 per process. Each process times steps that all-reduce the
gradients and steps under `no_sync()` (no communication), interleaved; the share is
1 - (step without all-reduce / step with it), from rank 0's medians.

Run: `python -m bench.allreduce [--steps 200] [--batch 4096]` (it starts its two processes itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def worker(steps: int, batch: int) -> None:
    import torch.distributed as dist

    from titanic_lightning.model.network import MLP

    dist.init_process_group("gloo")
    torch.manual_seed(dist.get_rank())
    net = torch.nn.parallel.DistributedDataParallel(MLP(7, [64, 32]))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 7), (torch.rand(batch) > 0.5).float()

    def step() -> float:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y).backward()
        optimizer.step()
        return time.perf_counter() - started

    timed = {"synced": [], "local": []}
    for i in range(steps + 10):
        synced = step()
        with net.no_sync():
            local = step()
        if i >= 10:  # warm-up
            timed["synced"].append(synced)
            timed["local"].append(local)
    if dist.get_rank() == 0:
        synced, local = statistics.median(timed["synced"]), statistics.median(timed["local"])
        print(json.dumps({"step_ms": synced * 1e3, "step_without_allreduce_ms": local * 1e3,
                          "allreduce_share": 1 - local / synced}), flush=True)
    dist.destroy_process_group()


def measure(steps: int = 200, batch: int = 4096) -> dict:
    from bench.parallel import _env, _free_port

    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={_free_port()}", "-m", "bench.allreduce", "--worker", "--steps", str(steps),
                          "--batch", str(batch)], cwd=REPO, env=_env(), check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.allreduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.batch)
    print(json.dumps(measure(args.steps, args.batch)))


if __name__ == "__main__":
    main()

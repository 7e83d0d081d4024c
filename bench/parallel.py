"""Benchmark: what tensor parallelism costs on the Titanic network, and where it pays.

Run: `python -m bench.parallel [--epochs 30] [--width 8192] [--batch 64] [--steps 3]`

1. Titanic network — `python -m entry.train` on the real data (7-64-32-1, batch 32, `--epochs`
   epochs, no early stopping): one process vs `--strategy tensor_parallel` on two processes
   (fit seconds and training rows/s, from metrics.json).
2. Wide MLP — 10-W-W-1 (`--width`), Adam, `--steps` steps of `--batch` rows per process, on one
   process, and on two processes as DDP, FSDP2 (`fully_shard`) and tensor parallel (this project's
   plan, `titanic_lightning.model.parallel`). Per rank: the bytes of parameters + gradients + Adam state it
   holds after a step (counted from the tensors, the memory that decides whether a model fits a
   device), and rows/s. DDP and FSDP2 each process a batch per process; tensor parallelism's two
   processes share one batch. `fsdp` here is FSDP2 on CPU (gloo); `--strategy fsdp` is Lightning's
   FSDP1 and runs on GPUs only.

Each case runs as fresh processes (torchrun for the two-process ones, gloo, one thread each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
WIDE_CASES = (("one process", "single", 1), ("ddp", "ddp", 2), ("fsdp2", "fsdp", 2), ("tensor_parallel", "tp", 2))


def _env() -> dict[str, str]:
    from titanic_lightning.environment import without_launcher

    return {**without_launcher(), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- 1. the Titanic network through the entry ------------------------------------------------


def titanic(epochs: int, csv: Path, work: Path) -> list[dict]:
    from titanic_lightning.data.prepare import prepare

    data = work / "data"
    prepare(csv, data)
    rows = []
    for name, extra in (("one process", []), ("tensor_parallel x2", ["--strategy", "tensor_parallel", "--cpu_processes", "2"])):
        model = work / name.replace(" ", "_")
        cmd = [sys.executable, "-m", "entry.train", "--train", str(data / "train_data.npz"), "--val",
               str(data / "val_data.npz"), "--epochs", str(epochs), "--early_stopping", "false",
               "--model_dir", str(model), "--output_dir", str(model / "out"), *extra]
        subprocess.run(cmd, cwd=work, env=_env(), check=True, capture_output=True, text=True)
        metrics = json.loads((model / "metrics.json").read_text())
        rows.append({"case": name, "fit_seconds": metrics["fit_seconds"], "rows_per_s": metrics["train_rows_per_second"],
                     "val_loss": metrics["val_loss"]})
    return rows


# --- 2. the wide MLP, one worker per process ---------------------------------------------------


def _held_bytes(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of this process's parameters, gradients and optimizer state (local shards only)."""
    from torch.distributed.tensor import DTensor

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    total = 0
    for p in net.parameters():
        total += local(p).nbytes + (local(p.grad).nbytes if p.grad is not None else 0)
    for state in optimizer.state.values():
        total += sum(local(v).nbytes for v in state.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    return total


def worker(kind: str, width: int, batch: int, steps: int) -> None:
    import time

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from titanic_lightning.model import parallel
    from titanic_lightning.model.network import MLP

    torch.manual_seed(0)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
    net = MLP(10, [width, width])
    if kind == "ddp":
        net = torch.nn.parallel.DistributedDataParallel(net)
    elif kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        fully_shard(net, mesh=init_device_mesh("cpu", (world,)))
    elif kind == "tp":
        parallel.parallelize(net, init_device_mesh("cpu", (1, world), mesh_dim_names=("data_parallel", "tensor_parallel")))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 10), (torch.rand(batch) > 0.5).float()
    seconds = []
    for _ in range(steps + 1):  # the first step (allocating the optimizer state) is not timed
        started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - started)
    held = _held_bytes(net, optimizer)
    rank = dist.get_rank() if world > 1 else 0
    # Rows trained per second by the whole job: tensor parallelism's processes share one batch.
    rows = batch * (1 if kind == "tp" else world) * steps / sum(seconds[1:])
    print(json.dumps({"rank": rank, "held_mib": held / 2**20, "rows_per_s": rows,
                      "step_s": sum(seconds[1:]) / steps}), flush=True)
    if world > 1:
        dist.destroy_process_group()


def wide(width: int, batch: int, steps: int) -> list[dict]:
    rows = []
    for name, kind, procs in WIDE_CASES:
        args = ["-m", "bench.parallel", "--worker", kind, "--width", str(width), "--batch", str(batch),
                "--steps", str(steps)]
        if procs > 1:
            args = ["-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={_free_port()}", *args]
        out = subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), check=True, capture_output=True,
                             text=True).stdout
        ranks = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        rows.append({"case": f"{name}" + (f" x{procs}" if procs > 1 else ""),
                     "held_mib_per_rank": max(r["held_mib"] for r in ranks),
                     "rows_per_s": min(r["rows_per_s"] for r in ranks), "step_s": max(r["step_s"] for r in ranks)})
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = [" | ".join(k.ljust(w) for k, w in zip(keys, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parallel", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=REPO.parent / "shared" / "data" / "titanic.csv")
    parser.add_argument("--worker", choices=[kind for _, kind, _ in WIDE_CASES], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.width, args.batch, args.steps)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, gloo")
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as work:
        print(f"\n## Titanic network 7-64-32-1, {args.epochs} epochs, batch 32\n")
        print(_table(titanic(args.epochs, args.csv, Path(work))))
    print(f"\n## Wide MLP 10-{args.width}-{args.width}-1, Adam, batch {args.batch} per step, {args.steps} timed steps\n")
    print(_table(wide(args.width, args.batch, args.steps)))


if __name__ == "__main__":
    main()

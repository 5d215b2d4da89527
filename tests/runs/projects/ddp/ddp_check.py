"""A DDP script using only torch.distributed (env:// init, gloo): all_reduce of the ranks, a
tiny DistributedDataParallel step, and outputs/ written by rank 0.

Everything lives in main(), as torch's guidance for a clean shutdown has it, and the process
ends with os._exit once its output is flushed, without Python's own teardown. Under load, a rank
whose work was done and whose process group was destroyed now and then aborted in that teardown
("terminate called without an active exception", exit code 134; faulthandler showed the abort in
a thread that is not Python's while the main thread had no Python frame left): one of torch's
native threads, late after a collective, still reached for the GIL while Python 3.11 was shutting
down, and Python ends such a thread with pthread_exit, which C++ turns into std::terminate. That
is torch's race with the interpreter, not TrainHub's launch these tests check."""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dist-url", default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--world-size", type=int, default=None)
    parser.add_argument("--dist-backend", default="gloo")
    parser.add_argument("--fail-rank", type=int, default=-1)
    parser.add_argument("--crash-rank", type=int, default=-1, help="this rank dies in native code (abort)")
    args = parser.parse_args()

    if args.dist_url:
        # The older edition's style: the URL, rank and world size come as arguments.
        dist.init_process_group(
            args.dist_backend, init_method=args.dist_url, rank=args.rank, world_size=args.world_size
        )
    else:
        dist.init_process_group(os.environ.get("TRAINHUB_DIST_BACKEND", "gloo"), init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    print(
        f"rank {rank}/{world} local {os.environ.get('LOCAL_RANK')} node {os.environ.get('NODE_RANK')} "
        f"master {os.environ.get('MASTER_ADDR')}",
        flush=True,
    )
    if rank == args.fail_rank:
        raise RuntimeError(f"rank {rank} fails on purpose")
    if rank == args.crash_rank:
        os.abort()
    total = all_reduce_ranks(rank, world)
    train_one_step()
    dist.barrier()
    if rank == 0:
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/result.json", "w") as handle:
            json.dump({"world_size": world, "sum": total}, handle)
    dist.destroy_process_group()


def all_reduce_ranks(rank: int, world: int) -> float:
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    expected = world * (world + 1) / 2
    print(f"all_reduce sum {value.item()} expected {expected}", flush=True)
    assert value.item() == expected
    return value.item()


def train_one_step() -> None:
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    loss = model(torch.randn(8, 4)).sum()
    loss.backward()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

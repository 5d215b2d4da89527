"""A DDP script using only torch.distributed (env:// init, gloo): all_reduce of the ranks, a
tiny DistributedDataParallel step, and outputs/ written by rank 0."""

import argparse
import json
import os

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--dist-url", default=None)
parser.add_argument("--rank", type=int, default=None)
parser.add_argument("--world-size", type=int, default=None)
parser.add_argument("--dist-backend", default="gloo")
parser.add_argument("--fail-rank", type=int, default=-1)
args = parser.parse_args()

if args.dist_url:
    # The older edition's style: the URL, rank and world size come as arguments.
    dist.init_process_group(args.dist_backend, init_method=args.dist_url, rank=args.rank, world_size=args.world_size)
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
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
expected = world * (world + 1) / 2
print(f"all_reduce sum {value.item()} expected {expected}", flush=True)
assert value.item() == expected

model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
loss = model(torch.randn(8, 4)).sum()
loss.backward()
dist.barrier()
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/result.json", "w") as handle:
        json.dump({"world_size": world, "sum": value.item()}, handle)
dist.destroy_process_group()

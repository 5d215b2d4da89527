"""Stands in for the example's train.py (ResNet on CIFAR-10 with DistributedDataParallel): each
rank reads the synthetic batches under --data-dir/cifar-10-batches-py, as torchvision's CIFAR10
would, and trains a linear model with DDP over gloo; rank 0 writes outputs/result.json."""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

# Everything lives in main() and the process ends with os._exit once its output is flushed:
# see tests/runs/projects/ddp/ddp_check.py for the abort in Python's teardown this avoids.


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=str, required=True)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None)
    args = parser.parse_args()

    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    batches = os.path.join(args.data_dir, "cifar-10-batches-py")
    names = sorted(os.listdir(batches))
    print(f"rank {rank}/{world} reads {batches.split(os.sep)[-1]}: {' '.join(names)}", flush=True)
    features = torch.cat([torch.load(os.path.join(batches, name), weights_only=True) for name in names])

    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(features.shape[1], 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(args.epochs):
        optimizer.zero_grad()
        loss = model(features).pow(2).mean()
        loss.backward()
        optimizer.step()
        print(f"rank {rank} epoch {epoch} loss {loss.item():.4f}", flush=True)

    seen = torch.tensor([float(len(names))])
    dist.all_reduce(seen)
    if rank == 0:
        os.makedirs("outputs", exist_ok=True)
        with open("outputs/result.json", "w") as handle:
            json.dump({"world_size": world, "files_seen": seen.item()}, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

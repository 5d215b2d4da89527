"""Stands in for the example's pytorch_mnist.py: the older style of distributed PyTorch, with the
backend, init URL, rank and world size given as arguments; a linear model on synthetic digits
trained with DistributedDataParallel."""

import argparse
import os
import sys

import torch
import torch.distributed as dist

# Everything lives in main() and the process ends with os._exit once its output is flushed:
# see tests/runs/projects/ddp/ddp_check.py for the abort in Python's teardown this avoids.


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dist-backend", default="gloo")
    parser.add_argument("--dist-url", required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    args = parser.parse_args()

    dist.init_process_group(args.dist_backend, init_method=args.dist_url, rank=args.rank, world_size=args.world_size)
    torch.manual_seed(args.rank)
    images, labels = torch.randn(64, 28 * 28), torch.randint(0, 10, (64,))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(28 * 28, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(2):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        where = f"rank {dist.get_rank()}/{dist.get_world_size()} {args.dist_backend}"
        print(f"{where} epoch {epoch} loss {loss.item():.4f}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

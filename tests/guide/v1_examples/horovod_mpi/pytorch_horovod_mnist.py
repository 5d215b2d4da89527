"""Stands in for the example's Horovod MNIST script (Horovod has no wheel for this machine):
under mpirun, each rank takes its rank from Open MPI's variables, as Horovod does, and
all_reduces a gradient-sized tensor over gloo."""

import os
import sys

import torch
import torch.distributed as dist

# Everything lives in main() and the process ends with os._exit once its output is flushed:
# see tests/runs/projects/ddp/ddp_check.py for the abort in Python's teardown this avoids.


def main() -> None:
    rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
    dist.init_process_group(
        "gloo", init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"], rank=rank, world_size=world
    )
    gradient = torch.full((10,), float(rank + 1))
    dist.all_reduce(gradient)
    print(f"horovod-style rank {rank}/{world} averaged gradient {gradient[0].item() / world}", flush=True)
    del gradient
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Stands in for the guide's Horovod script (Horovod has no wheel for this machine): under
mpirun, each rank takes its rank from Open MPI's variables and all_reduces over gloo."""

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
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    print(f"mpi rank {rank}/{world} all_reduce sum {value.item()} expected {world * (world + 1) / 2}", flush=True)
    assert value.item() == world * (world + 1) / 2
    del value
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""Stands in for the guide's Horovod script (Horovod has no wheel for this machine): under
mpirun, each rank takes its rank from Open MPI's variables and all_reduces over gloo."""

import os

import torch
import torch.distributed as dist

rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
dist.init_process_group(
    "gloo", init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"], rank=rank, world_size=world
)
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"mpi rank {rank}/{world} all_reduce sum {value.item()} expected {world * (world + 1) / 2}", flush=True)
assert value.item() == world * (world + 1) / 2
dist.destroy_process_group()

"""Stands in for the example's Horovod MNIST script (Horovod has no wheel for this machine):
under mpirun, each rank takes its rank from Open MPI's variables, as Horovod does, and
all_reduces a gradient-sized tensor over gloo."""

import os

import torch
import torch.distributed as dist

rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
dist.init_process_group("gloo", init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"], rank=rank, world_size=world)
gradient = torch.full((10,), float(rank + 1))
dist.all_reduce(gradient)
print(f"horovod-style rank {rank}/{world} averaged gradient {gradient[0].item() / world}", flush=True)
# Every rank reaches the end before any tears gloo down (a peer closing early aborts the other).
dist.barrier()
dist.destroy_process_group()

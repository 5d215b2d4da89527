"""The guide's MPI job, with torch.distributed in place of Horovod (tests/guide/project/
horovod_allreduce.py): under mpirun, each rank takes its rank from Open MPI's variables,
all_reduces over gloo, says who and where it is (as tests/runs/projects/ddp/mpi_allreduce.py does),
then holds until a file named `release` appears in its own host's run folder."""

import os
import sys
import time

import torch
import torch.distributed as dist


def main() -> None:
    rank, world = int(os.environ["OMPI_COMM_WORLD_RANK"]), int(os.environ["OMPI_COMM_WORLD_SIZE"])
    dist.init_process_group(
        "gloo", init_method=os.environ["AZ_BATCHAI_PYTORCH_INIT_METHOD"], rank=rank, world_size=world
    )
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    print(
        f"mpi rank {rank}/{world} OMPI_COMM_WORLD_RANK={os.environ['OMPI_COMM_WORLD_RANK']} "
        f"OMPI_COMM_WORLD_SIZE={world} NODE_RANK={os.environ.get('NODE_RANK')} sum={int(value.item())} "
        f"cwd={os.getcwd()}",
        flush=True,
    )
    while not os.path.exists("release"):
        time.sleep(0.1)
    dist.barrier()
    print(f"rank {rank} released", flush=True)
    dist.destroy_process_group()


# The process ends with os._exit once its output is flushed: see tests/runs/projects/ddp/ddp_check.py.
if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

"""An MPI program: every rank contributes rank+1; the allreduce sum is checked on every rank, which
says who it is and where it runs; then every rank holds 3 s, together, so that its node samples it
(system metrics)."""

import os
import time

from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
total = comm.allreduce(rank + 1, op=MPI.SUM)
print(
    f"mpi rank {rank}/{size} OMPI_COMM_WORLD_RANK={os.environ.get('OMPI_COMM_WORLD_RANK')} "
    f"OMPI_COMM_WORLD_SIZE={os.environ.get('OMPI_COMM_WORLD_SIZE')} NODE_RANK={os.environ.get('NODE_RANK')} "
    f"sum={total} cwd={os.getcwd()} container={os.path.exists('/.dockerenv')}",
    flush=True,
)
assert total == size * (size + 1) // 2
time.sleep(3)
if rank == 0:
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/mpi.txt", "w") as handle:
        handle.write(f"{size} {total}\n")

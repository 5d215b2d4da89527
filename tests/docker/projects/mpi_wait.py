"""An MPI program whose ranks say they are up, then wait until they are stopped (a run to cancel)."""

import time

from mpi4py import MPI

print(f"mpi rank {MPI.COMM_WORLD.Get_rank()} waiting to be canceled", flush=True)
while True:
    time.sleep(0.2)

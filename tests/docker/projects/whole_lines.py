"""Each local rank of a per-node launch prints many lines at once onto the launcher's one pipe."""

import os

rank = os.environ["LOCAL_RANK"]
for index in range(2000):
    print(f"rank {rank} line {index} " + "x" * (index % 50))

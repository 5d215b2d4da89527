"""Each local rank of a per-node launch prints many lines at once onto the launcher's one pipe, then
both hold 3 s, so that their node samples each rank in its container (system metrics)."""

import os
import sys
import time

rank = os.environ["LOCAL_RANK"]
for index in range(2000):
    print(f"rank {rank} line {index} " + "x" * (index % 50))
sys.stdout.flush()
time.sleep(3)

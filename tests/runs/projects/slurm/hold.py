"""Says which rank it is and where, then holds until a file named `release` appears in its run
folder (its working folder on its node), or for --seconds at most."""

import argparse
import os
import socket
import time

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=120)
args = parser.parse_args()
print(
    f"holding rank {os.environ.get('RANK')} node {os.environ.get('NODE_RANK')} of {os.environ.get('WORLD_SIZE')} "
    f"pid {os.getpid()} on {socket.gethostname()}",
    flush=True,
)
deadline = time.monotonic() + args.seconds
while not os.path.exists("release") and time.monotonic() < deadline:
    time.sleep(0.1)
print(f"released rank {os.environ.get('RANK')}", flush=True)

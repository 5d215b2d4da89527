"""Knocks at the run's rendezvous port before anything else (torch not yet imported), then meets the
other ranks there and all_reduces their ranks. Ends with os._exit once its output is flushed, as
ddp_check.py does (torch's native threads and Python's own teardown)."""

import os
import socket

try:
    socket.create_connection((os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])), timeout=30).close()
    print("the rendezvous port answered", flush=True)
except OSError as error:
    print(f"the rendezvous port did not answer: {error}", flush=True)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

dist.init_process_group("gloo", init_method="env://")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"all_reduce sum {total.item()}", flush=True)
dist.destroy_process_group()
os._exit(0)

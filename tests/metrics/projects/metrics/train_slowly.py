"""Trains a small torch model, logging its loss every 0.2 s until the file argv[1] (in its run folder) exists."""

import os
import sys
import time

import torch

from trainhub.sdk import Run

run = Run.get_context()
stop_file = sys.argv[1]
torch.manual_seed(0)
x = torch.randn(256, 8)
y = x @ torch.arange(8, dtype=torch.float32)
model = torch.nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
step = 0
deadline = time.monotonic() + 300
while not os.path.exists(stop_file) and time.monotonic() < deadline:
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
    loss.backward()
    optimizer.step()
    run.log("loss", loss)  # a one-element tensor, as people pass it
    step += 1
    print(f"step {step} loss {loss.item():.4f}", flush=True)
    time.sleep(0.2)
run.log_row("summary", steps=step, final_loss=loss.item())

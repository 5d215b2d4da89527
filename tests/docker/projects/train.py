"""Says where it runs (a container of the environment's image or not), trains a small linear
model for a few epochs and saves it to outputs/model.pt."""

import hashlib
import os
import sys

import torch

print(f"in container {os.path.exists('/.dockerenv')} python {sys.executable}", flush=True)
torch.manual_seed(0)
x = torch.randn(128, 4)
y = x @ torch.arange(4, dtype=torch.float32)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(3):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
    loss.backward()
    optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)
os.makedirs("outputs", exist_ok=True)
torch.save(model.state_dict(), "outputs/model.pt")
print("model sha256", hashlib.sha256(open("outputs/model.pt", "rb").read()).hexdigest(), flush=True)

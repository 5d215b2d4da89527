"""A small real training script: a linear model on synthetic data, saved to outputs/model.pt."""

import argparse
import hashlib
import os

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--num_epochs", type=int, default=3)
parser.add_argument("--output_dir", default="./outputs")
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(256, 8)
y = x @ torch.arange(8, dtype=torch.float32) + 0.5
model = torch.nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for epoch in range(args.num_epochs):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
    loss.backward()
    optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)

os.makedirs(args.output_dir, exist_ok=True)
path = os.path.join(args.output_dir, "model.pt")
torch.save(model.state_dict(), path)
print("model sha256", hashlib.sha256(open(path, "rb").read()).hexdigest(), flush=True)

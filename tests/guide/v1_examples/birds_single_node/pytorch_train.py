"""Stands in for the example's pytorch_train.py (transfer learning on the birds images): a linear
model on synthetic data that logs lr, momentum and best_val_acc as the original does, and saves
outputs/model.pt."""

import argparse
import os

import torch

from trainhub.sdk.run import Run

run = Run.get_context()

parser = argparse.ArgumentParser()
parser.add_argument("--num_epochs", type=int, default=25)
parser.add_argument("--output_dir", type=str)
parser.add_argument("--learning_rate", type=float, default=0.001)
parser.add_argument("--momentum", type=float, default=0.9)
args = parser.parse_args()

torch.manual_seed(0)
x = torch.randn(128, 4)
y = (x.sum(dim=1) > 0).long()
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate * 100, momentum=args.momentum)
best_acc = 0.0
for epoch in range(args.num_epochs):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    best_acc = max(best_acc, accuracy)
    run.log("best_val_acc", best_acc)
    print(f"Epoch {epoch} loss {loss.item():.4f} val acc {accuracy:.4f}", flush=True)
run.log("lr", args.learning_rate)
run.log("momentum", args.momentum)

os.makedirs(args.output_dir, exist_ok=True)
torch.save(model, os.path.join(args.output_dir, "model.pt"))

"""Trains a small classifier, saves it every way people do, and registers it from inside the run."""

import json
import os

import torch
from net import Net

from trainhub.sdk import Run

torch.manual_seed(0)
x = torch.randn(128, 8)
y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for epoch in range(5):
    optimizer.zero_grad()
    loss = torch.nn.functional.nll_loss(torch.log(model(x) + 1e-9), y)
    loss.backward()
    optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)

os.makedirs("outputs/bundle", exist_ok=True)
torch.save(model, "outputs/model.pt")  # the whole pickled nn.Module
torch.jit.script(model).save("outputs/scripted.pt")  # TorchScript
torch.save(model.state_dict(), "outputs/weights.pt")  # weights only
torch.save(model.state_dict(), "outputs/bundle/weights.pt")
with open("outputs/bundle/config.json", "w") as handle:
    json.dump({"inputs": 8, "classes": 3}, handle)
os.symlink("/etc/passwd", "outputs/evil-link.pt")

registered = Run.get_context().register_model(
    model_name="in-run-model", model_path="outputs/model.pt", tags={"phase": "in-run"}
)
print(f"registered in run {registered.id}", flush=True)

"""Stands in for the example's mnist.py: a small convolutional network trained on synthetic
digits, then exported to outputs/mnist.onnx (the TorchScript exporter: the graph is tiny and it
needs no tracing through torch.export)."""

import os

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10)
)
images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(2):
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}", flush=True)

os.makedirs("outputs", exist_ok=True)
model.eval()
torch.onnx.export(
    model,
    (torch.randn(1, 1, 28, 28),),
    "outputs/mnist.onnx",
    dynamo=False,
    input_names=["input"],
    output_names=["output"],
)
print("exported outputs/mnist.onnx", flush=True)

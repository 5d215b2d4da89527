"""Stands in for the example's MNIST script: the same network, torchvision transforms and a
torchvision dataset (FakeData in MNIST's shape instead of the download), Adadelta with StepLR,
then mlflow.pytorch.log_model into the run."""

import argparse

import mlflow
import mlflow.pytorch
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def main():
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    args = parser.parse_args()
    torch.manual_seed(1)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.FakeData(size=64, image_size=(1, 28, 28), num_classes=10, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32)
    model = Net()
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for data, target in loader:
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
        print(f"Train Epoch: {epoch}\tLoss: {loss.item():.6f}", flush=True)
        scheduler.step()
    # MLflow 3 saves a traced graph (pt2), which needs an example input; named requirements, since
    # MLflow otherwise infers them by loading the model in a subprocess.
    model.eval()
    mlflow.pytorch.log_model(model, name="model", input_example=data[:1].numpy(), pip_requirements=["torch==2.13.0"])
    print("logged the model with mlflow", flush=True)


if __name__ == "__main__":
    main()

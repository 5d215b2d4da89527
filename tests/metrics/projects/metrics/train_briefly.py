"""Fits a small logistic regression for a few seconds, logging loss and accuracy each epoch, while
it holds 100 MB: a run whose page shows its own metrics and the node's system metrics beside them."""

import argparse
import math
import random
import time

from trainhub.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=1.0)
parser.add_argument("--epochs", type=int, default=30)
args = parser.parse_args()
run = Run.get_context()
held = bytearray(100 * 2**20)
for index in range(0, len(held), 4096):
    held[index] = 1  # touched, so it is resident
random.seed(0)
points = [(random.gauss(0, 1), random.gauss(0, 1)) for _ in range(10000)]
# One label in ten flipped: the fit levels off below 100 %.
labels = [(x + 0.5 * y > 0) != (random.random() < 0.1) for x, y in points]
w = [-1.0, 0.5]  # a bad start, so the curves have somewhere to go
for _ in range(args.epochs):
    started = time.monotonic()
    loss, right = 0.0, 0
    for (x, y), label in zip(points, labels, strict=True):
        p = 1 / (1 + math.exp(-(w[0] * x + w[1] * y)))
        loss -= math.log(p if label else 1 - p)
        right += (p > 0.5) == bool(label)
        w[0] -= args.lr * (p - label) * x / len(points)
        w[1] -= args.lr * (p - label) * y / len(points)
    run.log("loss", loss / len(points))
    run.log("accuracy", right / len(points))
    time.sleep(max(0.0, 0.3 - (time.monotonic() - started)))
print(f"weights {w[0]:.3f} {w[1]:.3f}", flush=True)

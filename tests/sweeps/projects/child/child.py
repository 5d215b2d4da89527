"""A sweep's child: logs `accuracy` (given as --quality, or computed from --lr and --momentum)
`--steps` times, `--pause` seconds apart, then saves its "model"."""

import argparse
import os
import time

from trainhub.sdk import Run

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--quality", type=float, default=None)
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--pause", type=float, default=0.2)
args = parser.parse_args()

run = Run.get_context()
score = args.quality if args.quality is not None else 1 - abs(args.lr - 0.01) - abs(args.momentum - 0.9)
print(f"lr {args.lr} momentum {args.momentum} accuracy {score}", flush=True)
for _ in range(args.steps):
    run.log("accuracy", score)
    time.sleep(args.pause)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.pt", "w") as model:
    model.write(f"lr={args.lr} momentum={args.momentum}\n")

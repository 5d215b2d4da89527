"""Prints each file under --data_dir with its first line: what the estimator's data argument holds."""

import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--data_dir", required=True)
args = parser.parse_args()
for root, _, files in sorted(os.walk(args.data_dir)):
    for name in sorted(files):
        path = os.path.join(root, name)
        with open(path) as handle:
            print("data", os.path.relpath(path, args.data_dir), handle.readline().strip(), flush=True)

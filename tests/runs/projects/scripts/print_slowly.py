"""Prints a line, waits for a file to appear, prints another: a log that grows while watched."""

import os
import sys
import time

print("first line", flush=True)
deadline = time.time() + 60
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.1)
print("LATER-LINE after the page opened", flush=True)

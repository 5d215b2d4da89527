"""Prints a line, then waits until it is stopped (a run to cancel)."""

import time

print("waiting to be canceled", flush=True)
while True:
    time.sleep(0.2)

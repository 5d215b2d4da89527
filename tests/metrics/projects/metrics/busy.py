"""Holds 150 MB and keeps a core busy for a few seconds: what the node's system metrics should see."""

import time

held = bytearray(150 * 2**20)
for index in range(0, len(held), 4096):
    held[index] = 1  # touched, so it is resident
until = time.monotonic() + 4
spins = 0
while time.monotonic() < until:
    spins += 1
print(f"spun {spins} times holding {len(held) // 2**20} MB", flush=True)

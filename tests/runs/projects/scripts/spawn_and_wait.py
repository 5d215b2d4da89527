"""Starts a grandchild that ignores SIGTERM and records its pid, then waits forever."""

import subprocess
import sys
import time

pid_file = sys.argv[1]
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
)
with open(pid_file, "w") as handle:
    handle.write(f"{child.pid}\n")
print("grandchild started", child.pid, flush=True)
while True:
    time.sleep(0.2)

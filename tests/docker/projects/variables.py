"""Prints the variables a test looks for, as the rank sees them."""

import os

for name in ("SHARED_SETTING", "NODE_ONLY", "RANK", "MASTER_PORT"):
    print(f"{name}={os.environ.get(name)}", flush=True)

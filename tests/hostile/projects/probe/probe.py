"""A run in the environment `evil` was built into: prints what its build backend found (evil's
attacks.txt), then tries what snoop.py tries with the same arguments (writing into its own
environment and the node's environment cache)."""

import os
import runpy
from importlib import resources

print(resources.files("evil").joinpath("attacks.txt").read_text(), flush=True)
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "snoop.py"), run_name="__main__")

"""Prints the arguments it was given and the version of a package the estimator added."""

import sys

import mpi4py

print("argv", sys.argv[1:], flush=True)
print("mpi4py", mpi4py.__version__, flush=True)

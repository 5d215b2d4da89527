"""Prints N numbered lines as fast as it can."""

import sys

for number in range(int(sys.argv[1])):
    print(f"line {number}")

"""Prints a little, then fails with a traceback."""

print("about to divide", flush=True)


def divide(a, b):
    return a / b


divide(1, 0)

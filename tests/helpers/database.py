"""How much work the database does for a piece of code, counted in SQLite's virtual-machine steps:
a figure the machine's load does not change, for tests that a query does not walk every row."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import connection

STEPS_PER_COUNT = 100


def database_work(read: Callable[[], object]) -> int:
    """Hundreds of SQLite VM steps the queries of `read()` take."""
    if connection.vendor != "sqlite":
        pytest.skip("counts SQLite's virtual-machine steps; this database is " + connection.vendor)
    counted = 0

    def count() -> int:
        nonlocal counted
        counted += 1
        return 0  # go on

    connection.ensure_connection()
    connection.connection.set_progress_handler(count, STEPS_PER_COUNT)
    try:
        read()
    finally:
        connection.connection.set_progress_handler(None, STEPS_PER_COUNT)
    return counted

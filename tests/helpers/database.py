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


def assert_work_does_not_grow(reads: dict[str, Callable[[], object]], grow: Callable[[], object]) -> None:
    """Each of `reads` does about the same database work after `grow()` (which adds rows) as
    before it: it reads what it needs, not every row."""
    before = {name: database_work(read) for name, read in reads.items()}
    grow()
    after = {name: database_work(read) for name, read in reads.items()}
    for name in reads:
        assert after[name] <= before[name] * 1.5 + 2, (name, before, after)

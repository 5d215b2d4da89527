"""Writes: a run's parameters and tags kept as RunValue rows, which the runs table sorts and filters by.

Every write of `Run.parameters`, `Run.arguments` or `Run.tags` calls `run_values_sync` in its
transaction, after the run's row is written (and locked, where it already existed); a run just made
calls `run_values_create`."""

from __future__ import annotations

from runs.models import Run, RunValue
from runs.parameters import table_values


def run_value_rows(run: Run) -> list[RunValue]:
    """The RunValue rows a run should have, unsaved (its parameters were read from its arguments
    when it was submitted, and for older runs by migration 0004)."""
    return [
        RunValue(run_id=run.pk, workspace_id=run.workspace_id, experiment_id=run.experiment_id, **value._asdict())
        for value in table_values(run.parameters or {}, run.tags or {})
    ]


def run_values_sync(run: Run) -> None:
    """Make the run's RunValue rows match its parameters and tags: a row per new cell, the changed
    ones updated, the gone ones deleted (a tag added in a loop costs one read and one insert)."""
    wanted = {(row.kind, row.key): row for row in run_value_rows(run)}
    held = {(row.kind, row.key): row for row in RunValue.objects.filter(run_id=run.pk)}
    gone = [row.pk for cell, row in held.items() if cell not in wanted]
    changed = []
    for cell, row in held.items():
        new = wanted.get(cell)
        if new is not None and new.value != row.value:
            row.value, row.number, row.text = new.value, new.number, new.text
            changed.append(row)
    if gone:
        RunValue.objects.filter(pk__in=gone).delete()
    if changed:
        RunValue.objects.bulk_update(changed, ["value", "number", "text"])
    RunValue.objects.bulk_create([row for cell, row in wanted.items() if cell not in held])


def run_values_create(run: Run) -> None:
    """The RunValue rows of a run just made, which has none yet (no read of what it holds)."""
    RunValue.objects.bulk_create(run_value_rows(run))

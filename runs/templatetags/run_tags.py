"""Template filters that name runs the way people do: by experiment, number and display name."""

from __future__ import annotations

from django import template

from runs.models import Run

register = template.Library()


@register.filter
def run_label(run: Run | None) -> str:
    """ "pytorch-birds #3 · lr 0.01" rather than the run's id (shown where no experiment is around)."""
    if run is None:
        return ""
    label = f"{run.experiment.name} #{run.number}"
    return f"{label} · {run.display_name}" if run.display_name else label


@register.filter
def run_property(run: Run, key: str) -> str:
    """One of the run's properties (keys with dots, such as MLflow's, cannot be read in a template)."""
    return str((run.properties or {}).get(key, "")) if isinstance(run.properties, dict) else ""

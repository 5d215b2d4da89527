"""Template tags for other apps' pages: the inputs of a run, for its run page."""

from __future__ import annotations

from django import template

from datastores import selectors
from datastores.models import RunInput
from runs.models import Run

register = template.Library()


@register.simple_tag
def inputs_of_run(run: Run) -> list[RunInput]:
    return list(selectors.inputs_of(run))

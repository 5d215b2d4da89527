"""Template tags for other apps' pages: the versions registered from a run, for its run page."""

from __future__ import annotations

from django import template

from registry import selectors
from registry.models import ModelVersion
from runs.models import Run

register = template.Library()


@register.simple_tag
def versions_registered_from(run: Run) -> list[ModelVersion]:
    return list(selectors.versions_of_run(run))

"""Template filters every page uses: a moment shown as "5 minutes ago", the exact time on hover."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def when(moment: datetime | None) -> str:
    """A <time> element that reads "5 minutes ago"; static/trainhub/times.js keeps it current."""
    if moment is None:
        return ""
    exact = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
    ago = timesince(moment, timezone.now(), depth=1)
    return format_html('<time datetime="{}" title="{}">{} ago</time>', moment.isoformat(), exact, ago)

"""What Django's error pages and error mails may show of the settings."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SettingsFilter(SafeExceptionReporterFilter):
    """Django's own filter, plus the settings that hold the Redis URL with its password."""

    hidden_settings = re.compile(
        SafeExceptionReporterFilter.hidden_settings.pattern + "|REDIS|RQ_QUEUES", flags=re.IGNORECASE
    )

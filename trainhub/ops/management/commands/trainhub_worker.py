"""An RQ worker for the server's own background queue, started once Redis answers."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from trainhub.ops.redis_server import wait_for_redis


class Command(BaseCommand):
    help = "Wait for Redis, then run an RQ worker on the default queue."

    def handle(self, *args, **options) -> None:
        wait_for_redis(settings.REDIS_URL)
        call_command("rqworker", "default", with_scheduler=True)

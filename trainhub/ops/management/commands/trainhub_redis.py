"""Run a Redis server for REDIS_URL, unless one already answers there (then just stay up)."""

from __future__ import annotations

import os
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from trainhub.ops.redis_server import redis_answers, redis_server_command


class Command(BaseCommand):
    help = "Start redis-server on REDIS_URL's port with its data in the data directory, if needed."

    def handle(self, *args, **options) -> None:
        if redis_answers(settings.REDIS_URL):
            self.stdout.write(f"Redis already answers at {settings.REDIS_URL}: using it.")
            self.stdout.flush()
            # Stay in the process list so the runner treats this entry as up; leave on a signal.
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            while True:
                signal.pause()
        command = redis_server_command(settings.REDIS_URL, settings.DATA_DIR / "redis")
        os.execvp(command[0], command)

"""Run the controller: node reaper, run dispatcher and local provisioner."""

from __future__ import annotations

import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from runs.controller import run_controller
from trainhub.ops.redis_server import wait_for_redis


class Command(BaseCommand):
    help = "Fail runs of lost nodes, place queued runs, and start/stop local node processes."

    def handle(self, *args, **options) -> None:
        wait_for_redis(settings.REDIS_URL)
        stop: list[bool] = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
        signal.signal(signal.SIGINT, lambda *_: stop.append(True))
        # Loaded and connected: from here on, lost nodes are reaped and queued runs placed.
        self.stdout.write("Controller ready.")
        run_controller(stop)

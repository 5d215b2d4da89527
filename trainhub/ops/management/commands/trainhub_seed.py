"""Seed the demo (idempotent) and print how to sign in."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from trainhub.ops.demo import seed_demo


class Command(BaseCommand):
    help = "Create the demo administrator, workspace, token and config.json if missing."

    def handle(self, *args, **options) -> None:
        demo = seed_demo()
        self.stdout.write(f"login: {demo.username} / {demo.password}")
        self.stdout.write(f"config.json: {demo.config_path}")

"""What `make run` runs: migrate, seed the demo, print how to sign in, then run every process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from trainhub.datadir import redacted
from trainhub.ops.demo import seed_demo


class Command(BaseCommand):
    help = "Migrate, seed the demo, and start Redis (if needed), the web server and the workers."

    def handle(self, *args, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        demo = seed_demo()
        url = settings.TRAINHUB_PUBLIC_URL
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "TrainHub is starting.",
                    f"  URL:          {url}/",
                    f"  Login:        {demo.username} / {demo.password}",
                    f"  config.json:  {demo.config_path}",
                    f"  Data:         {settings.DATA_DIR}",
                    f"  Redis:        {redacted(settings.REDIS_URL)}",
                    "  Stop with Ctrl-C.",
                    "",
                ]
            )
        )
        self.stdout.flush()
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["TRAINHUB_DATA_DIR"] = str(settings.DATA_DIR)
        env["TRAINHUB_HOST"] = settings.TRAINHUB_HOST
        env["TRAINHUB_PORT"] = str(settings.TRAINHUB_PORT)
        env["PYTHONUNBUFFERED"] = "1"
        procfile = settings.BASE_DIR / "Procfile"
        honcho = str(bin_dir / "honcho")
        os.execvpe(honcho, [honcho, "start", "-f", str(procfile), "-d", str(settings.BASE_DIR)], env)

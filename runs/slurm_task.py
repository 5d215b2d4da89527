"""The entry point of a Slurm job's task on each allocated host: `python -m runs.slurm_task RUN_PK
[--env-file FILE]`, started by the job's srun. The file holds the host's node settings (NAME=value
lines: DATABASE_URL, REDIS_URL, TRAINHUB_DATA_DIR, …), read before Django starts, since a job carries
none of the server's variables. The task itself is runs/slurm_execution.py."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def load_env_file(path: Path) -> None:
    """NAME=value lines (blank lines and # comments skipped) into this process's environment."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        os.environ[name.strip()] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runs.slurm_task", description=__doc__)
    parser.add_argument("run", type=int)
    parser.add_argument("--env-file", type=Path)
    options = parser.parse_args(argv)
    if options.env_file:
        load_env_file(options.env_file)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "trainhub.settings")
    # Imported here: Django is set up only once --env-file has set the variables its settings read,
    # and run_task's module imports models, which need the set-up app registry.
    import django

    django.setup()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from runs.slurm_execution import run_task

    return run_task(options.run)


if __name__ == "__main__":
    sys.exit(main())

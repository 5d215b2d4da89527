"""Version numbers under concurrent registrations from two real processes: none is given twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from registry.models import Model as ModelRow
from registry.models import ModelVersion
from tests.helpers.processes import BASE_DIR, process_env

pytestmark = pytest.mark.postgres  # make test runs it against PostgreSQL too: numbering relies on row locks

REGISTRAR = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from trainhub.sdk import Model, Workspace

    url, token, start, folder, who = sys.argv[1:6]
    ws = Workspace.get("birds", url=url, token=token)
    while not os.path.exists(start):
        time.sleep(0.005)
    for i in range(6):
        path = Path(folder) / f"{who}-{i}.pt"
        path.write_bytes(b"same weights")  # same content: both processes race on one upload too
        model = Model.register(ws, str(path), "pytorch-birds", show_progress=False)
        print(model.version, flush=True)
    """
)


def test_two_processes_registering_at_once_get_distinct_numbers(live_url, owner_token, tmp_path):
    start = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                REGISTRAR,
                live_url,
                owner_token,
                str(start),
                str(tmp_path),
                who,
            ],
            cwd=BASE_DIR,
            env=process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("a", "b")
    ]
    start.touch()
    numbers = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        numbers += [int(line) for line in out.split()]
    assert sorted(numbers) == list(range(1, 13))
    assert sorted(ModelVersion.objects.values_list("version", flat=True)) == list(range(1, 13))
    assert ModelRow.objects.get(name="pytorch-birds").last_version == 12

"""Datastore fixtures: the run fixtures (cluster, node, curated environment, SDK workspace) and a
small data folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.runs.conftest import cluster, curated_env, node, ws  # noqa: F401  (fixtures)
from tests.runs.test_distributed import two_nodes  # noqa: F401  (fixture)

PROJECTS = Path(__file__).parent / "projects"
DATA = {"labels.txt": b"chicken\nturkey\n", "train/a.csv": b"x,y\n1,2\n", "train/b.csv": b"x,y\n3,4\n"}


def short_sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:8]


def listing(files: dict[str, bytes]) -> str:
    """How read_data.py prints a folder holding `files`."""
    return ",".join(f"{name}:{short_sha(content)}" for name, content in sorted(files.items()))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    root = tmp_path / "data"
    for name, content in DATA.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root

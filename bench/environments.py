"""Environment figures: cache-hit latency; a cold build of the curated PyTorch env, uv vs pip."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainhub.environments.builders import materialise_environment  # noqa: E402
from trainhub.environments.curated import PYTORCH_CPU_NAME, PYTORCH_CPU_SPEC  # noqa: E402

CACHE_HITS = 200
COLD_BUILDS = 3


def quiet(_line: str) -> None:
    pass


def cold_build(work: Path, label: str) -> float:
    """Seconds to build the spec into an empty cache (uv's own package cache stays warm)."""
    cache_dir = work / label
    started = time.perf_counter()
    materialise_environment(PYTORCH_CPU_SPEC, cache_dir=cache_dir, log=quiet, max_cache_bytes=0)
    seconds = time.perf_counter() - started
    shutil.rmtree(cache_dir)
    return seconds


def cache_hits(work: Path) -> list[float]:
    cache_dir = work / "hits"
    materialise_environment(PYTORCH_CPU_SPEC, cache_dir=cache_dir, log=quiet, max_cache_bytes=0)
    timings = []
    for _ in range(CACHE_HITS):
        started = time.perf_counter()
        built = materialise_environment(PYTORCH_CPU_SPEC, cache_dir=cache_dir, log=quiet)
        timings.append(time.perf_counter() - started)
        assert built.cache_hit
    shutil.rmtree(cache_dir)
    return timings


def pip_build(work: Path) -> float:
    """`python -m venv && pip install` of the same packages (pip reads the machine's config)."""
    venv = work / "pip-venv"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *PYTORCH_CPU_SPEC["pip"],
        ],
        check=True,
    )
    seconds = time.perf_counter() - started
    shutil.rmtree(venv)
    return seconds


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="trainhub-bench-envs-"))
    try:
        cold_build(
            work, "warm-up"
        )  # fills uv's package cache, as on any node after its first build
        uv_seconds = statistics.median(cold_build(work, f"cold-{i}") for i in range(COLD_BUILDS))
        hits = sorted(cache_hits(work))
        pip_seconds = pip_build(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"cache hit (prepare an already built spec, {CACHE_HITS} times): "
        f"median {statistics.median(hits) * 1000:.1f} ms, "
        f"p95 {hits[int(0.95 * (len(hits) - 1))] * 1000:.1f} ms (target median <= 50 ms)"
    )
    print(
        f"cold build of {PYTORCH_CPU_NAME} with uv (package cache warm, median of {COLD_BUILDS}): "
        f"{uv_seconds:.1f} s"
    )
    print(f"python -m venv && pip install {' '.join(PYTORCH_CPU_SPEC['pip'])}: {pip_seconds:.1f} s")
    print(f"ratio uv / pip: {uv_seconds / pip_seconds:.3f} (target <= 0.1)")


if __name__ == "__main__":
    sys.exit(main())

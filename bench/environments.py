"""Environment figures: cache-hit latency; a cold build of the curated PyTorch env, uv vs pip; for
its Docker edition (where an engine answers), the image cache hit and the start of a trivial script
in a container against the same in the virtualenv."""

from __future__ import annotations

import json
import os
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
DOCKER_CACHE_HITS = 50
TRIVIAL_STARTS = 5
DOCKER_SPEC = {**PYTORCH_CPU_SPEC, "docker": {"enabled": True}}
TRIVIAL = ["-c", "print('ok')"]


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


def docker_figures(work: Path) -> None:
    """Image cache hits in a warm process (as a node's), and a trivial script's start through the
    node's container helper against its start from the virtualenv."""
    from runs.containers import CONTAINER_RANK_ARGV, SPEC_VARIABLE, container_spec
    from trainhub.environments.docker_builder import engine_problem, materialise_image

    problem = engine_problem()
    if problem is not None:
        print(f"Docker figures: skipped, no engine answers ({problem})")
        return
    cache_dir = work / "docker"
    built = materialise_image(DOCKER_SPEC, cache_dir=cache_dir, log=quiet)
    hits = []
    for _ in range(DOCKER_CACHE_HITS):
        started = time.perf_counter()
        assert materialise_image(DOCKER_SPEC, cache_dir=cache_dir, log=quiet).cache_hit
        hits.append(time.perf_counter() - started)
    hits.sort()
    print(
        f"Docker image cache hit ({DOCKER_CACHE_HITS} times): median {statistics.median(hits) * 1000:.1f} ms, "
        f"p95 {hits[int(0.95 * (len(hits) - 1))] * 1000:.1f} ms (target <= 100 ms)"
    )
    venv = materialise_environment(PYTORCH_CPU_SPEC, cache_dir=work / "venv", log=quiet, max_cache_bytes=0)
    spec = container_spec(
        image=built.image,
        argv=[str(built.python), *TRIVIAL],
        env={},
        workdir=work,
        mounts=[work],
        labels={"trainhub.bench": "1"},
        gpus=0,
    )
    helper_env = {"PATH": os.environ["PATH"], SPEC_VARIABLE: json.dumps(spec)}
    in_venv = statistics.median(timed_run([str(venv.python), *TRIVIAL], os.environ) for _ in range(TRIVIAL_STARTS))
    in_container = statistics.median(timed_run(list(CONTAINER_RANK_ARGV), helper_env) for _ in range(TRIVIAL_STARTS))
    print(
        f"trivial script, median of {TRIVIAL_STARTS}: virtualenv {in_venv:.2f} s, container {in_container:.2f} s, "
        f"overhead {in_container - in_venv:.2f} s (target <= 1 s)"
    )


def timed_run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "ok", completed.stdout
    return time.perf_counter() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="trainhub-bench-envs-"))
    try:
        cold_build(work, "warm-up")  # fills uv's package cache, as on any node after its first build
        uv_seconds = statistics.median(cold_build(work, f"cold-{i}") for i in range(COLD_BUILDS))
        hits = sorted(cache_hits(work))
        pip_seconds = pip_build(work)
        docker_figures(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"cache hit (prepare an already built spec, {CACHE_HITS} times): "
        f"median {statistics.median(hits) * 1000:.1f} ms, "
        f"p95 {hits[int(0.95 * (len(hits) - 1))] * 1000:.1f} ms (target median <= 50 ms)"
    )
    print(f"cold build of {PYTORCH_CPU_NAME} with uv (package cache warm, median of {COLD_BUILDS}): {uv_seconds:.1f} s")
    print(f"python -m venv && pip install {' '.join(PYTORCH_CPU_SPEC['pip'])}: {pip_seconds:.1f} s")
    print(f"ratio uv / pip: {uv_seconds / pip_seconds:.3f} (target <= 0.1)")


if __name__ == "__main__":
    sys.exit(main())

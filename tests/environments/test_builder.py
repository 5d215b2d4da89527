"""The venv builder on real virtualenvs: builds, cache hits, concurrency, rebuilds, eviction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from filelock import FileLock

from tests.environments.conftest import SIX_SPEC
from trainhub.environments import builders
from trainhub.environments.builders import (
    MARKER,
    BuildError,
    materialise_environment,
    sdk_path,
    spec_hash,
)
from trainhub.environments.curated import PYTORCH_CPU_SPEC

BASE_DIR = Path(__file__).resolve().parents[2]


def build(spec, cache_dir, **extra):
    lines: list[str] = []
    built = materialise_environment(spec, cache_dir=cache_dir, log=lines.append, **extra)
    return built, "\n".join(lines)


def run_python(python: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ.update(env)
    # Away from the checkout, whose trainhub/ `python -c` would otherwise find first.
    return subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        cwd=python.parent,
    )


def age(root: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(root / builders.LAST_USED, (then, then))


def test_it_builds_a_virtualenv_whose_interpreter_imports_the_package(cache_dir):
    built, log = build(SIX_SPEC, cache_dir)
    assert not built.cache_hit
    assert built.root == cache_dir / spec_hash(SIX_SPEC)
    assert built.python == built.root / "bin" / "python"
    assert "Installing with uv" in log and "six" in log
    result = run_python(built.python, "import six, sys; print(six.__version__, sys.prefix)")
    assert result.returncode == 0, result.stderr
    version, prefix = result.stdout.split()
    assert version.startswith("1.") and Path(prefix) == built.root
    # The server's packages stay out: the venv holds only what the spec asks for.
    assert run_python(built.python, "import django").returncode != 0
    facts = json.loads((built.root / MARKER).read_text())
    assert facts["spec_hash"] == built.spec_hash and facts["installer"] == "uv"


def test_a_second_prepare_is_a_cache_hit(cache_dir):
    first, _ = build(SIX_SPEC, cache_dir)
    second, log = build(SIX_SPEC, cache_dir)
    assert second.cache_hit and second.python == first.python
    assert "in this node's cache" in log and "Building" not in log


def test_equal_specs_in_other_forms_share_one_build(cache_dir):
    build(SIX_SPEC, cache_dir)
    spelled_out = {
        "python": "3.11",
        "pip": [" six "],
        "conda": [],
        "channels": [],
        "docker": {"enabled": False, "base_image": None, "base_dockerfile": None},
        "environment_variables": {},
    }
    assert build(spelled_out, cache_dir)[0].cache_hit


CONCURRENT_PREPARE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from trainhub.environments.builders import materialise_environment
    lines = []
    spec, cache_dir = json.loads(sys.argv[1]), Path(sys.argv[2])
    built = materialise_environment(spec, cache_dir=cache_dir, log=lines.append)
    print(json.dumps({"cache_hit": built.cache_hit, "python": str(built.python), "log": lines}))
    """
)


def test_two_concurrent_prepares_build_once(cache_dir):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_PREPARE, json.dumps(SIX_SPEC), str(cache_dir)],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["cache_hit"] for r in results) == [False, True]
    builds = [line for r in results for line in r["log"] if line.startswith("Building environment")]
    assert len(builds) == 1
    assert results[0]["python"] == results[1]["python"]
    assert run_python(Path(results[0]["python"]), "import six").returncode == 0


def test_a_directory_without_the_completion_marker_is_rebuilt(cache_dir):
    first, _ = build(SIX_SPEC, cache_dir)
    # As a build killed halfway leaves it: files in place, no marker.
    (first.root / MARKER).unlink()
    (first.root / "bin" / "python").unlink()
    second, log = build(SIX_SPEC, cache_dir)
    assert not second.cache_hit
    assert "Removing an unfinished build" in log
    assert run_python(second.python, "import six").returncode == 0


def test_it_evicts_the_least_recently_used_environment_past_the_size_limit(cache_dir):
    old, _ = build(SIX_SPEC, cache_dir)
    age(old.root, 3600)
    newer_spec = {"python": "3.11", "pip": ["six"], "environment_variables": {"FLAVOUR": "newer"}}
    newer, log = build(newer_spec, cache_dir, max_cache_bytes=1)
    assert not old.root.exists()
    assert f"Evicted environment {old.spec_hash[:12]}" in log
    # The one just built stays even past the limit: it is about to be used.
    assert (newer.root / MARKER).is_file()
    assert not build(SIX_SPEC, cache_dir)[0].cache_hit


def test_it_never_evicts_an_environment_that_is_locked_or_running(cache_dir):
    locked, _ = build(SIX_SPEC, cache_dir)
    running, _ = build({"pip": ["six"], "environment_variables": {"A": "1"}}, cache_dir)
    for entry in (locked, running):
        age(entry.root, 3600)
    sleeper = subprocess.Popen([str(running.python), "-c", "import time; time.sleep(60)"])
    try:
        with FileLock(str(cache_dir / "_locks" / f"{locked.spec_hash}.lock")):
            _, log = build({"pip": ["six"], "environment_variables": {"A": "2"}}, cache_dir, max_cache_bytes=1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (locked.root / MARKER).is_file() and (running.root / MARKER).is_file()
    assert "over its" in log and "Evicted" not in log


def test_a_conda_only_package_is_a_clear_error_naming_it(cache_dir):
    spec = {"conda": ["_libgcc_mutex=0.1", "six=1.17", "pip"], "pip": []}
    with pytest.raises(BuildError) as failure:
        build(spec, cache_dir)
    assert failure.value.reason == builders.CONDA_UNAVAILABLE.format(names="_libgcc_mutex=0.1")
    assert "'six=1.17' is installed from the pip indexes as 'six==1.17.*'" in failure.value.log
    assert not (cache_dir / spec_hash(spec)).exists()


def test_conda_packages_the_pip_indexes_have_are_installed(cache_dir):
    built, log = build({"conda": ["conda-forge::six=1.17"], "channels": ["conda-forge"]}, cache_dir)
    assert "do not apply to the venv builder" in log
    assert run_python(built.python, "import six").returncode == 0


def test_a_python_the_node_lacks_builds_on_the_nodes_python_with_a_warning_naming_both(cache_dir):
    built, log = build({"python": "3.6", "pip": ["six"]}, cache_dir)
    own = f"{sys.version_info.major}.{sys.version_info.minor}"
    full = f"{own}.{sys.version_info.micro}"
    assert f"WARNING: the environment asks for Python 3.6, which node {builders.node_name()} does not have" in log
    assert f"building it on the node's Python {full} instead" in log and f"set python={own}" in log
    check = run_python(built.python, "import sys, six; print(sys.version_info[:2])")
    assert check.returncode == 0 and check.stdout.strip() == str(sys.version_info[:2])
    assert json.loads((built.root / MARKER).read_text())["python"] == full


def test_a_failed_install_gives_one_line_and_the_full_log(cache_dir):
    with pytest.raises(BuildError) as failure:
        build({"pip": ["six==0.0.1"]}, cache_dir)
    assert failure.value.reason.startswith("The requirements cannot be installed:")
    assert "\n" not in failure.value.reason
    assert "six" in failure.value.log and "Build failed" in failure.value.log
    assert not (cache_dir / spec_hash({"pip": ["six==0.0.1"]})).exists()


def test_an_invalid_spec_is_a_build_error():
    with pytest.raises(BuildError, match="spec is invalid"):
        materialise_environment({"pip": ["--index-url x"]}, cache_dir=Path("/nonexistent"), log=print)


def test_torch_is_pinned_to_the_local_build_or_refused():
    local = builders.installed_torch_version()
    assert local is not None and local.startswith("2.13.0")
    said: list[str] = []
    assert builders.pin_torch("torch", local, said.append) == f"torch=={local}"
    assert builders.pin_torch("torch>=2.0", local, said.append) == f"torch=={local}"
    assert builders.pin_torch("numpy>=1", local, said.append) == "numpy>=1"
    assert "this machine's local build" in said[0]
    with pytest.raises(BuildError, match="installs torch 2.13.0"):
        builders.pin_torch("torch==1.6.0", local, said.append)
    with pytest.raises(BuildError, match="exact pin"):
        builders.pin_torch("torch>=2", None, said.append)
    assert builders.pin_torch("torch==2.13.0", None, said.append) == "torch==2.13.0"


def test_a_torch_release_other_than_the_local_one_fails_before_installing(cache_dir):
    with pytest.raises(BuildError) as failure:
        build({"pip": ["torch==1.6.0"]}, cache_dir)
    assert "installs torch 2.13.0" in failure.value.reason
    assert "Installing with" not in failure.value.log


def test_without_uv_it_falls_back_to_pip_and_says_so(cache_dir):
    built, log = build({"pip": ["six"], "environment_variables": {"BY": "pip"}}, cache_dir, uv=None)
    assert "building with pip" in log
    assert json.loads((built.root / MARKER).read_text())["installer"] == "pip"
    assert run_python(built.python, "import six").returncode == 0


def test_the_in_run_sdk_imports_in_a_built_environment(cache_dir):
    built, _ = build(SIX_SPEC, cache_dir)
    folder = sdk_path(cache_dir)
    assert sdk_path(cache_dir) == folder
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "trainhub/__init__.py" in files
    # The SDK and the sitecustomize that keeps a per-node launcher's ranks' lines whole; no server code.
    assert all(f in ("trainhub/__init__.py", "sitecustomize.py") or f.startswith("trainhub/sdk/") for f in files)
    result = run_python(
        built.python,
        "import trainhub.sdk; from trainhub.sdk import Run;"
        "from trainhub.sdk.environment import Environment; print(trainhub.sdk.__file__)",
        PYTHONPATH=str(folder),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(folder))


@pytest.mark.slow
def test_the_curated_pytorch_environment_builds_from_the_local_torch(cache_dir):
    built, log = build(PYTORCH_CPU_SPEC, cache_dir)
    assert f"installed as 'torch=={builders.installed_torch_version()}'" in log
    # Importing torch takes seconds on a busy machine; its metadata says the same about the build.
    result = run_python(
        built.python,
        "import importlib.metadata as m, numpy; print(m.version('torch'), numpy.__name__)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [builders.installed_torch_version(), "numpy"]


TORCHVISION_CHECK = """
import warnings
warnings.simplefilter("always")
import torch, torchvision
from torchvision import models, transforms
from PIL import Image
model = models.resnet18(weights=None).eval()
image = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])(Image.new("RGB", (64, 64)))
print("resnet18", tuple(model(image.unsqueeze(0)).shape))
try:
    torchvision.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)
except RuntimeError as error:
    print("nms:", str(error).split(".")[0])
"""


def test_a_cuda_torchvision_beside_the_cpu_torch_imports_without_its_compiled_ops_and_says_so(cache_dir):
    built, log = build({"pip": ["torch==2.13.0", "torchvision", "pillow"]}, cache_dir)
    if not (built.root / "lib" / "python3.11" / "site-packages" / f"{builders.TORCHVISION_SHIM}.pth").exists():
        pytest.skip("this machine's torchvision loads beside its torch: nothing to work around")
    assert "is a CUDA build: its compiled operators need libtorch_cuda" in log
    checked = run_python(built.python, TORCHVISION_CHECK)
    assert checked.returncode == 0, checked.stderr
    assert "resnet18 (1, 1000)" in checked.stdout
    assert "nms: Couldn't load custom C++ ops" in checked.stdout
    assert "torchvision's models, transforms and datasets work; its compiled operators" in checked.stderr
    # A process that never imports torchvision neither imports torch nor warns.
    quiet = run_python(built.python, "import sys; print('torch' in sys.modules)")
    assert quiet.stdout.strip() == "False" and quiet.stderr == ""

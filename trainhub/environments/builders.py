"""The venv builder: an environment becomes a virtualenv, built once per node, cached by spec hash.

Layout of a node's cache directory:
    <spec_hash>/                      the virtualenv, built in place (venvs are not relocatable)
    <spec_hash>/.trainhub-complete    written last; a directory without it is wiped and rebuilt
    <spec_hash>/.trainhub-last-used   touched on every use; least-recent use decides eviction
    _locks/<spec_hash>.lock           one build per spec at a time, across processes
    _sdk/<content hash>/trainhub/     the in-run SDK, which runs get on PYTHONPATH

Packages are installed with uv, given the machine's pip configuration (uv does not read it):
indexes, local wheel folders and constraints. pip is used only when uv is missing or fails for a
reason other than resolution, and the build log says so. Interpreters are never downloaded.

Member code never runs outside a box. uv first installs with --no-build, as the node's user against
the node's shared uv cache: installing wheels executes nothing of theirs, and this is the fast path
(a warm cache hard-links every file). Only when a package must be built from source (an sdist's
setup.py or PEP 517 backend is member code) does the install run again in a box (trainhub/sandbox.py):
an unprivileged uid of its own, the site's data and the other environments out of sight, a
throwaway uv cache of its own in the box's private /tmp (so a build backend cannot poison the shared
cache that other workspaces' builds hard-link from), and only the installer's variables. pip, which
has no such switch, always installs in a box. Whoever built it, a finished environment is handed to
the node's user and no one else can write to it: no run can plant code that a later run imports.

torch: a resolver never chooses torch. Every torch requirement (in pip, a conda `pytorch`, or one
pulled in by another package, through a constraint) is pinned to the torch installed next to
TrainHub (2.13.0+cpu here: the machine's local CPU wheel). A requirement that excludes that
release is refused with a clear error rather than resolved to some other (multi-GB CUDA) build.

Django-free but for a boxed install (the box reads the site's settings): nodes, the server's worker
and the benchmarks call it alike.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from filelock import FileLock, Timeout
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from trainhub.environments import spec as specs
from trainhub.pipconf import PipConfig, read_pip_config
from trainhub.sandbox import Box, box_uid, node_sandbox_support, python_folders
from trainhub.sdk._whole_lines import SITECUSTOMIZE

MARKER = ".trainhub-complete"
LAST_USED = ".trainhub-last-used"
REQUIREMENTS_FILE = ".trainhub-requirements.txt"
CONSTRAINTS_FILE = ".trainhub-constraints.txt"
DEFAULT_MAX_CACHE_BYTES = 50 * 1024**3
# A run starts its processes a moment after materialise returns: so recent a use protects an entry.
EVICTION_GRACE_SECONDS = 600
WAIT_LOG_SECONDS = 30
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# uv's words when --no-build met a package it could only build from source.
NEEDS_BUILD = re.compile(r"(?i)building source distributions .*is disabled|building from source is disabled")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What an installer sees of the node's variables (besides *_PROXY, UV_* and PIP_* ones).
INSTALLER_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_CACHE_HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
_FIND = object()

CONDA_ALIASES = {"pytorch": "torch", "pytorch-cpu": "torch", "py-opencv": "opencv-python"}
# conda lists pip itself among the dependencies; a virtualenv needs no conda package for it.
CONDA_SKIPPED = {"pip"}

PYTHON_FALLBACK = (
    "WARNING: the environment asks for Python {wanted}, which node {node} does not have (it has "
    "{available}): building it on the node's Python {version} instead. Interpreters are never "
    "downloaded; set python={short} in the environment to silence this, or install Python {wanted} "
    "on the node."
)
CONDA_UNAVAILABLE = (
    "The venv builder cannot install these conda packages: {names}. It installs Python packages "
    "from the node's pip indexes only; move the ones that exist there under pip:, or drop them."
)
TORCH_EXCLUDED = (
    "This machine installs torch {local} only (its local CPU build); the environment asks for "
    "{asked!r}. Ask for torch=={release}."
)
# Packages known not to build against the local torch up to a release: asking for one fails at
# once, saying why, instead of after minutes of compiler output. Name → (newest such release, why).
CANNOT_BUILD = {
    "horovod": (
        "0.28.1",
        "Horovod cannot be installed on these nodes: its newest release, {release}, has no wheels, and "
        "its source build compiles its PyTorch part as C++14, which the headers of torch {torch} refuse "
        "(they need C++17). Leave horovod out and use torch.distributed: MpiConfiguration starts the "
        "script under mpirun as Horovod's launcher would (rank and size in OMPI_COMM_WORLD_RANK and "
        "OMPI_COMM_WORLD_SIZE, the rendezvous in AZ_BATCHAI_PYTORCH_INIT_METHOD).",
    ),
}
TORCHVISION_SHIM = "_trainhub_torchvision_cpu"
TORCHVISION_WITHOUT_OPS = (
    "torchvision {torchvision} is a CUDA build: its compiled operators need libtorch_cuda, which torch "
    "{torch} does not have. It is set up to import without them: its models, transforms and datasets "
    "work; torchvision.ops (nms, roi_align, …) and torchvision.io's image decoding do not, and "
    "importing torchvision warns so."
)
TORCH_URL = "torch must come from this machine's local build, not from a URL ({asked!r})."
TORCH_UNPINNED = (
    "torch is not installed next to TrainHub on this node, so an exact pin (torch==X.Y.Z) is "
    "required instead of {asked!r}: a free resolver would fetch a multi-GB CUDA build."
)


class BuildError(Exception):
    """A build that failed: `reason` is one line for people, `log` the full build log."""

    def __init__(self, reason: str, log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log = log


@dataclass(frozen=True)
class MaterialisedEnvironment:
    python: Path
    root: Path
    spec_hash: str
    cache_hit: bool
    # The image's tag for a Docker environment (python and root are then paths inside it).
    image: str | None = None


def uses_docker(spec: dict) -> bool:
    """Docker environments build an image and run in containers; the others build a virtualenv."""
    return bool((spec.get("docker") or {}).get("enabled"))


def spec_hash(spec: dict) -> str:
    """sha256 of the normalised spec (sorted keys, canonical JSON)."""
    return specs.spec_hash(spec)


def node_name() -> str:
    return socket.gethostname()


class BuildLog:
    """Forwards each line to the caller as it comes, and keeps them all for the build record."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.forward = log
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.forward(line)

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")


def materialise_environment(
    spec: dict,
    *,
    cache_dir: Path,
    log: Callable[[str], None],
    max_cache_bytes: int | None = None,
    uv: Any = _FIND,
) -> MaterialisedEnvironment:
    """The virtualenv of `spec` on this node: from the cache, or built now (once, whoever asks).

    `uv` is the uv executable to install with; None builds with pip, as on a node without uv.
    """
    transcript = BuildLog(log)
    normalised, digest = normalise(spec, transcript)
    cache_dir = Path(cache_dir).absolute()
    root = cache_dir / digest
    hit = _cache_hit(cache_dir, digest, transcript)
    if hit is not None:
        return hit

    lock = FileLock(str(lock_path(cache_dir, digest)))
    acquire_waiting(lock, digest, transcript)
    try:
        if (root / MARKER).is_file():
            _touch(root)
            transcript(f"Environment {digest[:12]} was built by another process while this one waited.")
            return MaterialisedEnvironment(_venv_python(root), root, digest, cache_hit=True)
        _build(normalised, digest, root, transcript, find_uv() if uv is _FIND else uv)
    finally:
        lock.release()
    limit = _default_max_cache_bytes() if max_cache_bytes is None else max_cache_bytes
    evict_least_recently_used(cache_dir, max_bytes=limit, keep={digest}, log=transcript)
    return MaterialisedEnvironment(_venv_python(root), root, digest, cache_hit=False)


def cached_environment(
    spec: dict, *, cache_dir: Path, log: Callable[[str], None] | None = None
) -> MaterialisedEnvironment | None:
    """The environment of `spec` when this node has it built (marking it used), else None."""
    transcript = BuildLog(log or (lambda _line: None))
    _, digest = normalise(spec, transcript)
    return _cache_hit(Path(cache_dir).absolute(), digest, transcript)


def normalise(spec: dict, log: BuildLog) -> tuple[dict[str, Any], str]:
    try:
        # A node checks again what the server checked: a spec stored before a requirement was
        # refused, or under another setting, is not built either.
        normalised = specs.normalise_spec(spec, allow_direct_urls=direct_urls_allowed())
    except specs.SpecError as error:
        log(f"The environment spec is invalid: {error}")
        raise BuildError(f"The environment spec is invalid: {error}", log.text()) from None
    return normalised, specs.spec_hash(normalised)


def _cache_hit(cache_dir: Path, digest: str, log: Callable[[str], None]) -> MaterialisedEnvironment | None:
    root = cache_dir / digest
    if not (root / MARKER).is_file():
        return None
    # The lock is uncontended here unless an eviction is removing this very entry.
    with FileLock(str(lock_path(cache_dir, digest))):
        if not (root / MARKER).is_file():
            return None
        _touch(root)
    log(f"Environment {digest[:12]} is in this node's cache: {root}")
    return MaterialisedEnvironment(_venv_python(root), root, digest, cache_hit=True)


def acquire_waiting(lock: FileLock, digest: str, log: Callable[[str], None]) -> None:
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        log(f"Another process on this node is building environment {digest[:12]}: waiting for it.")
    waited = 0
    while True:
        try:
            lock.acquire(timeout=WAIT_LOG_SECONDS)
            return
        except Timeout:
            waited += WAIT_LOG_SECONDS
            log(f"Still waiting for the other build of {digest[:12]} ({waited} s).")


def _build(spec: dict[str, Any], digest: str, root: Path, log: BuildLog, uv: Path | None) -> None:
    started = time.monotonic()
    log(f"Building environment {digest[:12]} on node {node_name()} into {root}")
    try:
        if root.exists():
            log("Removing an unfinished build found there (no completion marker).")
            shutil.rmtree(root)
        _note_ignored_parts(spec, log)
        interpreter, version = find_python(spec["python"], log)
        log(f"Python {version} from {interpreter}")
        requirements = python_requirements(spec, interpreter, uv, log)
        if uv is not None:
            _build_with_uv(uv, interpreter, root, requirements, log, digest)
        else:
            log("uv is not available on this node: building with pip, which is much slower.")
            _create_venv_with_python(interpreter, root, log)
            _write_inputs(root, requirements)
            if requirements:
                _pip_install(root, log, digest)
        torchvision_without_compiled_ops(root, log)
        size = directory_size(root)
        seconds = time.monotonic() - started
        _write_marker(
            root,
            {
                "spec_hash": digest,
                "python": version,
                "installer": "uv" if uv is not None else "pip",
                "node": node_name(),
                "built_at": datetime.now(UTC).isoformat(),
                "seconds": round(seconds, 3),
                "size_bytes": size,
            },
        )
        _touch(root)
        log(f"Environment {digest[:12]} built in {seconds:.1f} s ({size / 1e6:.1f} MB).")
    except BuildError as error:
        shutil.rmtree(root, ignore_errors=True)
        log(f"Build failed: {error.reason}")
        raise BuildError(error.reason, log.text()) from None
    except Exception as error:  # the record must say why, whatever broke
        shutil.rmtree(root, ignore_errors=True)
        reason = f"The build failed: {type(error).__name__}: {error}".splitlines()[0][:300]
        log(reason)
        raise BuildError(reason, log.text()) from error


def torchvision_without_compiled_ops(root: Path, log: Callable[[str], None]) -> bool:
    """Let a CUDA build of torchvision beside a CPU torch import without its compiled operators
    (the only torchvision wheels for torch 2.13 on this machine's indexes are CUDA builds); True
    when it had to. See torchvision_shim.py for why torchvision needs the help."""
    site = next(iter(sorted(root.glob("lib/python3.*/site-packages"))), None)
    if site is None:
        return False
    compiled, torch_lib = site / "torchvision" / "_C.so", site / "torch" / "lib"
    if not compiled.is_file() or not torch_lib.is_dir() or (torch_lib / "libtorch_cuda.so").exists():
        return False
    if b"libtorch_cuda.so" not in compiled.read_bytes():
        return False
    shutil.copyfile(Path(__file__).with_name("torchvision_shim.py"), site / f"{TORCHVISION_SHIM}.py")
    (site / f"{TORCHVISION_SHIM}.pth").write_text(f"import {TORCHVISION_SHIM}\n")
    versions = {
        name: next((p.name.split("-")[1].removesuffix(".dist-info") for p in site.glob(f"{name}-*.dist-info")), "?")
        for name in ("torch", "torchvision")
    }
    log(TORCHVISION_WITHOUT_OPS.format(**versions))
    return True


def _note_ignored_parts(spec: dict[str, Any], log: Callable[[str], None]) -> None:
    docker = spec["docker"]
    if docker["enabled"] or docker["base_image"] or docker["base_dockerfile"]:
        image = docker["base_image"] or ("a Dockerfile" if docker["base_dockerfile"] else "the default image")
        log(f"Docker settings ({image}) are kept with the environment; this node builds a virtualenv instead.")
    if spec["channels"]:
        log(f"conda channels ({', '.join(spec['channels'])}) do not apply to the venv builder.")


# ---------------------------------------------------------------- interpreters


def find_python(version: str, log: Callable[[str], None] = lambda _line: None) -> tuple[Path, str]:
    """An interpreter of this machine matching X.Y of `version`, and its full version; where the
    machine has none, the node's own Python, with a warning line naming both versions (environment
    files written for the cloud pin Pythons such as 3.6 that a node no longer has)."""
    wanted = ".".join(version.split(".")[:2])
    for candidate in _candidates(wanted):
        found = _probe_python(candidate)
        if found is not None and found[0] == wanted:
            return Path(found[2]), found[1]
    own = sys.version_info
    short, full = f"{own.major}.{own.minor}", f"{own.major}.{own.minor}.{own.micro}"
    available = ", ".join(f"Python {v}" for v in available_pythons()) or f"Python {short}"
    log(PYTHON_FALLBACK.format(wanted=wanted, node=node_name(), available=available, version=full, short=short))
    return Path(sys.executable), full


def _candidates(wanted: str) -> list[str]:
    candidates = []
    if f"{sys.version_info.major}.{sys.version_info.minor}" == wanted:
        candidates.append(sys.executable)
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        candidates.append(on_path)
    return candidates


def available_pythons() -> dict[str, str]:
    """X.Y → interpreter path, for this process's Python and each pythonX.Y on PATH that runs."""
    names = [sys.executable] + [path for minor in range(6, 20) if (path := shutil.which(f"python3.{minor}"))]
    # Each probe starts an interpreter (or a slow pyenv shim): side by side, not one after another.
    with ThreadPoolExecutor(max_workers=8) as pool:
        probed = list(pool.map(_probe_python, names))
    found: dict[str, str] = {}
    for result in probed:
        if result is not None:
            found.setdefault(result[0], result[2])
    return dict(sorted(found.items(), key=lambda item: tuple(int(p) for p in item[0].split("."))))


@functools.lru_cache(maxsize=64)
def _probe_python(executable: str) -> tuple[str, str, str] | None:
    """(X.Y, X.Y.Z, path of the real interpreter) of an executable, or None when it does not run.

    pyenv puts shims for every version on PATH that fail unless that version is selected, so a
    name on PATH is only a candidate until it has run.
    """
    code = "import sys; v = sys.version_info; print(f'{v[0]}.{v[1]} {v[0]}.{v[1]}.{v[2]}'); print(sys.executable)"
    try:
        completed = subprocess.run([executable, "-c", code], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.split("\n")
    if completed.returncode != 0 or len(lines) < 2 or not lines[1]:
        return None
    short, full = lines[0].split()
    return short, full, lines[1]


def _venv_python(root: Path) -> Path:
    return root / "bin" / "python"


# ---------------------------------------------------------------- requirements


@functools.lru_cache(maxsize=1)
def installed_torch_version() -> str | None:
    """The torch installed next to TrainHub: the one build nodes of this machine may install."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def pin_torch(entry: str, local: str | None, log: Callable[[str], None]) -> str:
    """The requirement as given, or for torch, pinned to the local build (or refused)."""
    requirement = Requirement(entry)
    _refuse_if_it_cannot_build(requirement, local)
    if canonicalize_name(requirement.name) != "torch":
        return entry
    if requirement.url:
        raise BuildError(TORCH_URL.format(asked=entry))
    if local is None:
        pins = [s for s in requirement.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if len(pins) != 1:
            raise BuildError(TORCH_UNPINNED.format(asked=entry))
        return entry
    release = Version(local).public
    if requirement.specifier and not requirement.specifier.contains(Version(local), prereleases=True):
        raise BuildError(TORCH_EXCLUDED.format(local=local, asked=entry, release=release))
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    marker = f"; {requirement.marker}" if requirement.marker else ""
    pinned = f"torch{extras}=={local}{marker}"
    log(f"torch: {entry!r} is installed as {pinned!r}, this machine's local build.")
    return pinned


def _refuse_if_it_cannot_build(requirement: Requirement, local_torch: str | None) -> None:
    known = CANNOT_BUILD.get(canonicalize_name(requirement.name))
    if known is None or requirement.url:
        return
    release, why = Version(known[0]), known[1]
    # Only a requirement that names a newer release than the failing ones is tried.
    newer = any(
        s.operator != "!=" and s.operator[0] in ">=~" and Version(s.version) > release for s in requirement.specifier
    )
    if not newer:
        raise BuildError(why.format(release=release, torch=local_torch or "2.13"))


def conda_to_pip(entry: str) -> str | None:
    """The pip requirement for a conda match spec, or None when it cannot be one."""
    text = entry.split("::")[-1].strip()
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$", text)
    if not match:
        return None
    name, rest = match.group(1), match.group(2).strip()
    name = CONDA_ALIASES.get(name.lower(), name)
    if not rest:
        requirement = name
    elif rest[0] in "<>!~" or rest.startswith("=="):
        requirement = name + rest.split()[0]
    else:
        # conda's "name=1.2", "name=1.2=build" and "name 1.2 build" all mean version 1.2.*
        version = rest[1:].split("=")[0] if rest.startswith("=") else rest.split()[0]
        if version and version[0] in "<>!~=":
            requirement = name + version
        else:
            version = version.rstrip("*").rstrip(".")
            requirement = f"{name}=={version}.*" if version else name
    try:
        Requirement(requirement)
    except InvalidRequirement:
        return None
    return requirement


def python_requirements(spec: dict[str, Any], interpreter: Path, uv: Path | None, log: BuildLog) -> list[str]:
    """The pip requirements of a normalised spec: pip entries and translated conda packages, torch
    pinned to this machine's build."""
    torch_version = installed_torch_version()
    requirements = [pin_torch(entry, torch_version, log) for entry in spec["pip"]]
    return requirements + _conda_requirements(spec["conda"], interpreter, torch_version, uv, log)


def torch_constraints() -> str:
    """A constraints file's text: packages that pull torch in (torchvision, lightning…) get the local build."""
    torch_version = installed_torch_version()
    return f"torch=={torch_version}\n" if torch_version else ""


def _conda_requirements(
    entries: Iterable[str],
    interpreter: Path,
    torch_version: str | None,
    uv: Path | None,
    log: BuildLog,
) -> list[str]:
    """conda packages that the pip indexes have become pip requirements; the others are refused."""
    requirements, missing = [], []
    for entry in entries:
        name = specs.conda_package_name(entry)
        if name in CONDA_SKIPPED:
            continue
        translated = conda_to_pip(entry)
        if translated is not None:
            translated = pin_torch(translated, torch_version, log)
        if translated is None or not _installable(translated, interpreter, uv):
            missing.append(entry)
            continue
        log(f"conda package {entry!r} is installed from the pip indexes as {translated!r}.")
        requirements.append(translated)
    if missing:
        raise BuildError(CONDA_UNAVAILABLE.format(names=", ".join(missing)))
    return requirements


def _installable(requirement: str, interpreter: Path, uv: Path | None) -> bool:
    config = pip_config()
    if uv is not None:
        command = [
            str(uv),
            "pip",
            "compile",
            "--quiet",
            "--no-header",
            "--no-deps",
            # Metadata from wheels only: an sdist's build would run member code outside a box.
            "--no-build",
            "--color",
            "never",
            "--python",
            str(interpreter),
            "--no-python-downloads",
            *config.uv_args(),
            "-",
        ]
    else:
        command = [
            str(interpreter),
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--ignore-installed",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ]
    completed = subprocess.run(
        command,
        input=requirement + "\n",
        capture_output=True,
        text=True,
        env=_installer_env(),
        timeout=600,
        check=False,
    )
    return completed.returncode == 0


@functools.lru_cache(maxsize=1)
def pip_config() -> PipConfig:
    # Reading it runs pip (half a second): once per process, not once per build.
    return read_pip_config()


def _installer_env() -> dict[str, str]:
    """What an installer sees of the node's variables: where to reach the network and the node's
    own uv/pip settings, never the rest (secrets in the node's environment stay there)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in INSTALLER_VARIABLES or name.upper().endswith("_PROXY") or name.startswith(("UV_", "PIP_"))
    }
    env.pop("UV_PYTHON", None)
    env.setdefault("PATH", SYSTEM_PATH)
    env.update(pip_config().uv_env())
    env.update({"UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1", "PIP_NO_INPUT": "1"})
    return env


def _box_env(root: Path) -> dict[str, str]:
    """The variables of an install in a box: the installer's, with a home, caches and temporary
    files of the box's own (its private /tmp, thrown away with it)."""
    env = {
        name: value
        for name, value in _installer_env().items()
        if name not in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "UV_CACHE_DIR", "PIP_CACHE_DIR")
    }
    env.update(
        {
            "PATH": f"{root / 'bin'}:{SYSTEM_PATH}",
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "UV_CACHE_DIR": "/tmp/uv-cache",
            # The cache and the virtualenv are separate mounts in the box: no hard links across.
            "UV_LINK_MODE": "copy",
            "PIP_CACHE_DIR": "/tmp/pip-cache",
        }
    )
    return env


def _write_inputs(root: Path, requirements: list[str]) -> None:
    (root / REQUIREMENTS_FILE).write_text("".join(f"{r}\n" for r in requirements))
    (root / CONSTRAINTS_FILE).write_text(torch_constraints())


# ---------------------------------------------------------------- installers


def find_uv() -> Path | None:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    try:
        # An optional package (uv's wheel ships its binary): without it, uv is looked for beside Python.
        from uv import find_uv_bin
    except ImportError:
        return None
    try:
        return Path(find_uv_bin())
    except FileNotFoundError:
        return None


def _build_with_uv(
    uv: Path,
    interpreter: Path,
    root: Path,
    requirements: list[str],
    log: BuildLog,
    digest: str,
) -> None:
    version = subprocess.run([str(uv), "--version"], capture_output=True, text=True, check=False).stdout.strip()
    log(f"Installing with {version or 'uv'}, using this machine's pip configuration.")
    code, output = _stream(
        [
            str(uv),
            "venv",
            "--python",
            str(interpreter),
            "--no-python-downloads",
            "--python-preference",
            "only-system",
            "--color",
            "never",
            str(root),
        ],
        log,
    )
    if code != 0:
        raise BuildError(f"uv could not create the virtualenv: {last_error(output)}")
    _write_inputs(root, requirements)
    if not requirements:
        log("No packages to install.")
        return
    install = [
        str(uv),
        "pip",
        "install",
        "--python",
        str(_venv_python(root)),
        "--color",
        "never",
        "--no-progress",
        *pip_config().uv_args(),
        "--constraint",
        str(root / CONSTRAINTS_FILE),
        "-r",
        str(root / REQUIREMENTS_FILE),
    ]
    code, output = _stream([*install, "--no-build"], log)
    if code != 0 and NEEDS_BUILD.search(output):
        log(
            "A package must be built from source: installing again in a box, as an unprivileged "
            "user with a uv cache of its own."
        )
        code, output = _boxed(install, root, digest, log)
    if code == 0:
        return
    if _is_resolution_failure(output):
        raise BuildError(f"The requirements cannot be installed: {last_error(output)}")
    log(f"uv could not install the requirements ({last_error(output)}); falling back to pip.")
    _pip_install(root, log, digest)


def _create_venv_with_python(interpreter: Path, root: Path, log: BuildLog) -> None:
    code, output = _stream([str(interpreter), "-m", "venv", "--without-pip", str(root)], log)
    if code != 0:
        raise BuildError(f"python -m venv failed: {last_error(output)}")


def _pip_install(root: Path, log: BuildLog, digest: str) -> None:
    # pip reads the machine's pip configuration itself; this process's pip installs into the venv.
    # It builds whatever sdist it meets, so it always runs in a box.
    code, output = _boxed(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(_venv_python(root)),
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-c",
            str(root / CONSTRAINTS_FILE),
            "-r",
            str(root / REQUIREMENTS_FILE),
        ],
        root,
        digest,
        log,
    )
    if code != 0:
        raise BuildError(f"pip could not install the requirements: {last_error(output)}")


def _is_resolution_failure(output: str) -> bool:
    return any(
        phrase in output for phrase in ("No solution found", "not found in the package registry", "Failed to parse")
    )


def last_error(output: str) -> str:
    """The line of an installer's output that says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    # uv puts the cause below its summary ("cause:", or an arrow in colour); pip says "error:".
    causes = [line.split("╰─▶", 1)[1] for line in lines if "╰─▶" in line]
    causes += [line.split(":", 1)[1] for line in lines if line.startswith("cause:")]
    errors = [line.split(":", 1)[1] for line in lines if line.lower().startswith("error:")]
    found = causes[:1] or errors[-1:] or lines[-1:] or ["no output"]
    return found[0].strip()[:300]


def _stream(command: list[str], log: Callable[[str], None]) -> tuple[int, str]:
    """Run `command` (TrainHub's own installer, running no member code), passing each output line
    to `log` as it comes; (exit code, all output)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=_installer_env(),
        bufsize=1,
    )
    return _pump(process, log)


def _pump(process: subprocess.Popen, log: Callable[[str], None]) -> tuple[int, str]:
    collected = []
    with process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            collected.append(line)
            log(line)
        code = process.wait()
    return code, "\n".join(collected)


def _boxed(command: list[str], root: Path, digest: str, log: Callable[[str], None]) -> tuple[int, str]:
    """Run an installer that may run member code (an sdist's build) in a box whose one writable
    folder is the virtualenv being built; (exit code, all output).

    The box's uid is one of the build kind, derived from the spec hash; its /tmp (home, caches)
    is thrown away afterwards. Where the node may run member code unboxed
    (TRAINHUB_NODE_SANDBOX=false), it runs unboxed and the build log says so.
    """
    try:
        enabled, note = node_sandbox_support(settings.TRAINHUB_NODE_SANDBOX)
    except ImproperlyConfigured as error:
        raise BuildError(str(error)) from None
    if not enabled:
        log(note)
        return _stream(command, log)
    scratch = Path(tempfile.mkdtemp(prefix=f".box-{digest[:12]}-", dir=root.parent))
    box = Box(
        uid=box_uid("build", int(digest[:8], 16)),
        workdir=root,
        tmp=scratch / "tmp",
        # The installers and the interpreters the virtualenv links to may live in a hidden folder
        # (a pyenv Python under the node user's home): put back read-only.
        read_only=(
            _venv_python(root).resolve().parents[1],
            *python_folders(Path(sys.executable)),
            Path(settings.BASE_DIR),
        ),
    )
    box.prepare()
    try:
        process = box.popen(
            command,
            _box_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
        )
        return _pump(process, log)
    finally:
        box.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
        _seal(root)


def _seal(root: Path) -> None:
    """After a box installed into it, the virtualenv belongs to the node's user again and nobody
    else may write to it: not the box's uid, not a run's, so nothing planted there reaches a later
    run. (What uv installs as the node's user is so already: wheels' files get 0644 or 0755.)"""
    owner = os.geteuid()
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            if stat.st_uid != owner or stat.st_gid != os.getegid():
                os.chown(path, owner, os.getegid(), follow_symlinks=False)
            if not os.path.islink(path) and stat.st_mode & 0o022:
                os.chmod(path, stat.st_mode & ~0o022 & 0o7777)


# ---------------------------------------------------------------- cache bookkeeping


def lock_path(cache_dir: Path, digest: str) -> Path:
    # Outside the entry, so wiping an unfinished entry never removes the lock others wait on.
    locks = cache_dir / "_locks"
    locks.mkdir(parents=True, exist_ok=True)
    return locks / f"{digest}.lock"


def _touch(root: Path) -> None:
    path = root / LAST_USED
    try:
        os.utime(path)
    except FileNotFoundError:
        path.touch()


def _write_marker(root: Path, facts: Mapping[str, Any]) -> None:
    temporary = root / f"{MARKER}.tmp"
    temporary.write_text(json.dumps(facts, indent=2) + "\n")
    os.replace(temporary, root / MARKER)


def directory_size(root: Path) -> int:
    """Bytes of the files under `root`, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                stat = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            key = (stat.st_dev, stat.st_ino)
            if key not in seen:
                seen.add(key)
                total += stat.st_size
    return total


@dataclass(frozen=True)
class CacheEntry:
    root: Path
    spec_hash: str
    size_bytes: int
    last_used: float


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    """The finished environments in a cache, least recently used first."""
    entries: list[CacheEntry] = []
    if not Path(cache_dir).is_dir():
        return entries
    for root in Path(cache_dir).iterdir():
        marker = root / MARKER
        if not HASH_PATTERN.match(root.name) or not marker.is_file():
            continue
        try:
            size = int(json.loads(marker.read_text()).get("size_bytes"))
        except (OSError, ValueError, TypeError):
            size = directory_size(root)
        try:
            last_used = (root / LAST_USED).stat().st_mtime
        except FileNotFoundError:
            last_used = marker.stat().st_mtime
        entries.append(CacheEntry(root, root.name, size, last_used))
    return sorted(entries, key=lambda entry: entry.last_used)


def evict_least_recently_used(
    cache_dir: Path, *, max_bytes: int, keep: Iterable[str] = (), log: Callable[[str], None]
) -> list[str]:
    """Remove least-recently-used environments until the cache fits `max_bytes` (0: no limit).

    Never removes one that is being built (its lock is held), used in the last
    EVICTION_GRACE_SECONDS, or run by a live process of this machine. Returns the hashes removed.
    """
    cache_dir = Path(cache_dir).absolute()
    _remove_abandoned_builds(cache_dir, log)
    if max_bytes <= 0:
        return []
    entries = cache_entries(cache_dir)
    total = sum(entry.size_bytes for entry in entries)
    if total <= max_bytes:
        return []
    keep = set(keep)
    in_use = roots_in_use(cache_dir)
    now = time.time()
    removed = []
    for entry in entries:
        if total <= max_bytes:
            break
        if entry.spec_hash in keep or entry.spec_hash in in_use or now - entry.last_used < EVICTION_GRACE_SECONDS:
            continue
        lock = FileLock(str(lock_path(cache_dir, entry.spec_hash)))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            # The marker goes first: nobody takes a half-deleted directory for a finished one.
            (entry.root / MARKER).unlink(missing_ok=True)
            shutil.rmtree(entry.root, ignore_errors=True)
        finally:
            lock.release()
        total -= entry.size_bytes
        removed.append(entry.spec_hash)
        log(
            f"Evicted environment {entry.spec_hash[:12]} "
            f"({entry.size_bytes / 1e6:.0f} MB, least recently used) "
            "from this node's cache."
        )
    if total > max_bytes:
        log(
            f"The environment cache holds {total / 1e6:.0f} MB, "
            f"over its {max_bytes / 1e6:.0f} MB limit: "
            "the rest is in use."
        )
    return removed


def _remove_abandoned_builds(cache_dir: Path, log: Callable[[str], None]) -> None:
    if not cache_dir.is_dir():
        return
    for root in cache_dir.iterdir():
        if not HASH_PATTERN.match(root.name) or (root / MARKER).exists():
            continue
        lock = FileLock(str(lock_path(cache_dir, root.name)))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # being built right now
        try:
            if root.is_dir() and not (root / MARKER).exists():
                shutil.rmtree(root, ignore_errors=True)
                log(f"Removed the unfinished build {root.name[:12]} from this node's cache.")
        finally:
            lock.release()


def roots_in_use(cache_dir: Path) -> set[str]:
    """Spec hashes whose interpreter a live process of this machine runs (Linux: from /proc)."""
    prefix = str(Path(cache_dir).absolute()) + os.sep
    used: set[str] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return used
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for argument in arguments[:2]:
            text = argument.decode(errors="replace")
            if text.startswith(prefix):
                name = text[len(prefix) :].split(os.sep, 1)[0]
                if HASH_PATTERN.match(name):
                    used.add(name)
    return used


def direct_urls_allowed() -> bool:
    """The administrator's TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS (off without Django settings)."""
    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return bool(getattr(settings, "TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS", False))
    return False


def _default_max_cache_bytes() -> int:
    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return int(getattr(settings, "TRAINHUB_ENV_CACHE_MAX_BYTES", DEFAULT_MAX_CACHE_BYTES))
    return DEFAULT_MAX_CACHE_BYTES


# ---------------------------------------------------------------- the in-run SDK


def sdk_path(cache_dir: Path) -> Path:
    """A folder holding only trainhub/__init__.py, trainhub/sdk and a sitecustomize.py, to put on
    a run's PYTHONPATH.

    Copied once per content: a new TrainHub version gets a new folder, and running scripts
    keep the one they started with.
    """
    contents, digest = _sdk_contents()
    base = Path(cache_dir).absolute() / "_sdk"
    target = base / digest
    if target.is_dir():
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    for relative, data in contents:
        destination = staging / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)
    staging.chmod(0o755)  # mkdtemp's 0700 would keep it from the runs' unprivileged users
    try:
        os.rename(staging, target)
    except OSError:
        # Another process put the same content there first.
        shutil.rmtree(staging, ignore_errors=True)
    return target


@functools.cache
def _sdk_contents() -> tuple[list[tuple[str, bytes]], str]:
    """The in-run SDK's files (path, bytes) and the name of their folder: read and hashed once per
    process (a node asks at every run: ~2 ms), as this process runs the code it loaded at its start."""
    package = Path(__file__).resolve().parents[1]
    files = [package / "__init__.py"] + sorted(
        path
        for path in (package / "sdk").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    contents = [(path.relative_to(package.parent).as_posix(), path.read_bytes()) for path in files]
    contents.append(("sitecustomize.py", SITECUSTOMIZE.encode()))
    digest = hashlib.sha256()
    for relative, data in contents:
        digest.update(relative.encode() + b"\0" + data + b"\0")
    return contents, digest.hexdigest()[:16]

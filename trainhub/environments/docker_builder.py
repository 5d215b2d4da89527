"""The docker builder: an environment becomes an image tagged by its spec hash, built once per engine.

The image comes from a generated Dockerfile: the base (docker.base_image, or the environment's
own Dockerfile, or TrainHub's local base image), a virtualenv at /opt/trainhub/env holding the
environment's Python packages, and the in-run SDK at /opt/trainhub/sdk. Images are built with
the Docker SDK for Python and never pushed.

Packages come from this machine's pip configuration, exactly as for the venv builder (torch
pinned to the local CPU build). The build's RUN steps (the environment's own Dockerfile's among
them, which are a member's code) run on the engine's default bridge network, never the host's: the
host's loopback (Redis, the web server, a database) is out of their reach, while the machine's
package registries and Debian mirror still answer (a RUN step of a base Dockerfile may apt-get).
The configuration's local folders (file:// indexes, find-links folders) are served to the build
over HTTP on the bridge's gateway address for the length of the build, since a build cannot mount
the host's folders; that server answers nothing but those folders. The host's uv goes into the
image (one layer, the same for every environment) to install them.

Django-free: nodes and the benchmarks call it alike.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.conf import settings
from filelock import FileLock, Timeout
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trainhub.environments.builders import (
    BuildError,
    BuildLog,
    MaterialisedEnvironment,
    acquire_waiting,
    find_uv,
    last_error,
    lock_path,
    node_name,
    normalise,
    pip_config,
    python_requirements,
    sdk_path,
    torch_constraints,
)
from trainhub.pipconf import PipConfig

IMAGE_REPOSITORY = "trainhub-env"
DEFAULT_BASE_IMAGE = "trainhub/python:3.11-bookworm"
IMAGE_ROOT = "/opt/trainhub"
ENV_ROOT = f"{IMAGE_ROOT}/env"
SDK_ROOT = f"{IMAGE_ROOT}/sdk"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_SPEC = "trainhub.spec-hash"
LABEL_SDK = "trainhub.sdk"
ENGINE_TIMEOUT_SECONDS = 600
DEFAULT_SOCKET = "/var/run/docker.sock"
PING_TIMEOUT_SECONDS = 5
# The install steps' text holds the local folders' URL: one port keeps them the same from build to
# build, so the engine reuses their layers.
LOCAL_INDEX_PORT = 47180
# Builds never get the host's network: on the default bridge they reach the host only at its
# gateway address, where nothing of the site listens (its services listen on loopback).
BUILD_NETWORK = "bridge"
DEFAULT_IMAGE_KEEP_DAYS = 14
DEFAULT_IMAGE_KEEP_COUNT = 5
SUPERSEDED_GRACE_SECONDS = 3600
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

NO_ENGINE = (
    "No Docker engine answers on node {node} ({error}): a Docker environment needs one. Start "
    "dockerd (scripts/docker-engine.sh) or run this environment with docker.enabled = False."
)


@functools.lru_cache(maxsize=1)
def docker_client() -> Any:
    """A client of the engine DOCKER_HOST names (the local socket by default), one per process."""
    # Imported here: the Docker SDK takes about a second to import, paid only where an engine is used.
    import docker

    return docker.from_env(timeout=ENGINE_TIMEOUT_SECONDS)


def engine_problem() -> str | None:
    """Why no Docker engine answers, or None when one does.

    Every node asks as it starts: a local socket is asked directly, since importing the Docker SDK
    takes longer than the answer (nodes that never run a Docker environment never import it).
    """
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    try:
        if host.startswith("unix://"):
            _ping_socket(host.removeprefix("unix://"))
        else:
            docker_client().ping()
    except Exception as error:  # OSError, HTTP or SDK errors: all mean "no engine"
        return f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return None


def _ping_socket(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(PING_TIMEOUT_SECONDS)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status = sock.recv(64).split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise OSError(f"the engine at {path} answered {status.decode(errors='replace')!r}")


def image_tag(digest: str) -> str:
    return f"{IMAGE_REPOSITORY}:{digest}"


def cached_image(
    spec: dict, *, cache_dir: Path, log: Callable[[str], None] | None = None
) -> MaterialisedEnvironment | None:
    """The image of `spec` when the engine has it (with this TrainHub's in-run SDK), else None."""
    transcript = BuildLog(log or (lambda _line: None))
    _, digest = normalise(spec, transcript)
    client = _client_or_fail(transcript)
    return _image_hit(client, digest, _sdk_digest(cache_dir), transcript)


def materialise_image(spec: dict, *, cache_dir: Path, log: Callable[[str], None]) -> MaterialisedEnvironment:
    """The image of `spec` on this node's engine: as it is, or built now (once, whoever asks).
    After a build, this site's images unused for a while are pruned (prune_images)."""
    transcript = BuildLog(log)
    normalised, digest = normalise(spec, transcript)
    cache_dir = Path(cache_dir).absolute()
    client = _client_or_fail(transcript)
    sdk = sdk_path(cache_dir)
    hit = _image_hit(client, digest, sdk.name, transcript)
    if hit is not None:
        record_image_use(cache_dir, digest)
        return hit
    # Nodes of one machine share its engine: one build per spec at a time, the others wait.
    lock = FileLock(str(lock_path(cache_dir, f"docker-{digest}")))
    acquire_waiting(lock, digest, transcript)
    try:
        hit = _image_hit(client, digest, sdk.name, transcript)
        record_image_use(cache_dir, digest)
        if hit is not None:
            return hit
        _build(client, normalised, digest, sdk, transcript)
    finally:
        lock.release()
    for tag in prune_images(cache_dir):
        log(f"Pruned image {tag[:25]}: not used by this site for a while.")
    for short_id in prune_superseded_images():
        log(f"Pruned image {short_id}: an older build of an environment, superseded.")
    return _in_image(digest, cache_hit=False)


# ---------------------------------------------------------------- pruning


def _uses_dir(cache_dir: Path) -> Path:
    return Path(cache_dir).absolute() / "docker-images"


def record_image_use(cache_dir: Path, digest: str) -> None:
    """Mark the image of `digest` used by this site now (its file's modification time)."""
    folder = _uses_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).touch()


def image_keep_policy() -> tuple[float, int]:
    """(days, count): this site keeps its images used within the last `days`, and its `count`
    most recently used ones whenever they were used."""
    days: float = DEFAULT_IMAGE_KEEP_DAYS
    count = DEFAULT_IMAGE_KEEP_COUNT
    if settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"):
        days = float(getattr(settings, "TRAINHUB_IMAGE_KEEP_DAYS", days))
        count = int(getattr(settings, "TRAINHUB_IMAGE_KEEP_COUNT", count))
    return days, count


def prune_images(cache_dir: Path, *, keep_days: float | None = None, keep_count: int | None = None) -> list[str]:
    """Remove the environment images this site used last longer than `keep_days` ago, beyond its
    `keep_count` most recently used; the tags removed.

    Only images this site used are candidates (the engine may serve other TrainHub sites, whose
    images are theirs to prune), only of the trainhub-env repository (never a base image), never
    one a container (running or not) was created from, and never one being built or checked out
    by a node of this site right now (its lock is held).
    """
    default_days, default_count = image_keep_policy()
    keep_days = default_days if keep_days is None else keep_days
    keep_count = default_count if keep_count is None else keep_count
    folder = _uses_dir(cache_dir)
    if not folder.is_dir() or engine_problem() is not None:
        return []
    import docker.errors  # loaded with the client, see docker_client

    uses = sorted(folder.iterdir(), key=lambda path: path.stat().st_mtime, reverse=True)
    cutoff = time.time() - keep_days * 86400
    candidates = [path for path in uses[keep_count:] if path.stat().st_mtime < cutoff]
    if not candidates:
        return []
    client = docker_client()
    in_use = _images_of_containers(client)
    removed = []
    for use in candidates:
        tag = image_tag(use.name)
        lock = FileLock(str(lock_path(Path(cache_dir).absolute(), f"docker-{use.name}")))
        try:
            lock.acquire(blocking=False)
        except Timeout:
            continue
        try:
            try:
                image = client.images.get(tag)
            except docker.errors.ImageNotFound:
                use.unlink(missing_ok=True)
                continue
            if image.id in in_use:
                continue
            try:
                client.images.remove(tag)
            except docker.errors.APIError:
                continue  # a container was created from it meanwhile
            use.unlink(missing_ok=True)
            removed.append(tag)
        finally:
            lock.release()
    return removed


def prune_superseded_images(*, older_than_seconds: float = SUPERSEDED_GRACE_SECONDS) -> list[str]:
    """Remove environment images that lost their tag (a rebuild for a newer in-run SDK took it)
    and no container was created from; their short ids. No site can use an untagged image by
    name, so these go whoever built them; only those older than `older_than_seconds`, never one a
    build has just made and not tagged yet."""
    if engine_problem() is not None:
        return []
    import docker.errors  # loaded with the client, see docker_client

    client = docker_client()
    in_use = _images_of_containers(client)
    cutoff = time.time() - older_than_seconds
    removed = []
    for image in client.images.list(filters={"dangling": True, "label": LABEL_SPEC}):
        if image.id in in_use or _created_at(image.attrs.get("Created", "")) > cutoff:
            continue
        try:
            client.images.remove(image.id)
        except docker.errors.APIError:
            continue  # a container was created from it meanwhile, or another node removed it
        removed.append(image.short_id)
    return removed


def _images_of_containers(client: Any) -> set[str]:
    """The ids of the images containers (running or not) were created from: never pruned."""
    return {container.attrs.get("Image") for container in client.containers.list(all=True, ignore_removed=True)}


def _created_at(stamp: str) -> float:
    """Seconds since the epoch of the engine's RFC 3339 time (nanoseconds cut); now if unreadable."""
    try:
        return datetime.fromisoformat(stamp[:19]).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def _client_or_fail(log: BuildLog) -> Any:
    problem = engine_problem()
    if problem is not None:
        reason = NO_ENGINE.format(node=node_name(), error=problem)
        log(reason)
        raise BuildError(reason, log.text())
    return docker_client()


def _sdk_digest(cache_dir: Path) -> str:
    return sdk_path(Path(cache_dir).absolute()).name


def _image_hit(client: Any, digest: str, sdk_digest: str, log: Callable[[str], None]) -> MaterialisedEnvironment | None:
    import docker.errors  # loaded with the client, see docker_client

    try:
        image = client.images.get(image_tag(digest))
    except docker.errors.ImageNotFound:
        return None
    if (image.labels or {}).get(LABEL_SDK) != sdk_digest:
        log(f"Image {image_tag(digest)[:25]} holds an older in-run SDK: rebuilding its last layer.")
        return None
    log(f"Image {image_tag(digest)[:25]} is in this node's Docker engine ({image.short_id}).")
    return _in_image(digest, cache_hit=True)


def _in_image(digest: str, *, cache_hit: bool) -> MaterialisedEnvironment:
    """The environment as runs see it: paths inside the image."""
    root = Path(ENV_ROOT)
    return MaterialisedEnvironment(root / "bin" / "python", root, digest, cache_hit, image_tag(digest))


def _build(client: Any, spec: dict[str, Any], digest: str, sdk: Path, log: BuildLog) -> None:
    started = time.monotonic()
    tag = image_tag(digest)
    log(f"Building image {tag[:25]} on node {node_name()} with the Docker engine")
    uv = find_uv()
    try:
        if uv is None:
            raise BuildError("uv is not installed next to TrainHub on this node: the image build needs it.")
        requirements = python_requirements(spec, Path(sys.executable), uv, log)
        with (
            tempfile.TemporaryDirectory(prefix="trainhub-image-") as context,
            _local_folders_served(_bridge_gateway(client)) as served,
        ):
            dockerfile = _write_context(Path(context), spec, requirements, uv, sdk, served)
            log("Generated Dockerfile:")
            for line in dockerfile.splitlines():
                log(f"  {line}")
            _stream_build(client, context, tag, {LABEL_SPEC: digest, LABEL_SDK: sdk.name}, log)
    except BuildError as error:
        log(f"Build failed: {error.reason}")
        raise BuildError(error.reason, log.text()) from None
    except Exception as error:  # the record must say why, whatever broke
        reason = f"The image build failed: {type(error).__name__}: {error}".splitlines()[0][:300]
        log(reason)
        raise BuildError(reason, log.text()) from error
    log(f"Image {tag[:25]} built in {time.monotonic() - started:.1f} s.")


def dockerfile_text(spec: dict[str, Any], install_args: list[str], has_cert: bool, torch: bool) -> str:
    """The Dockerfile of a normalised spec; `install_args` are uv's index options for the build.

    torch, when asked for, gets a layer of its own before the other packages: the same for every
    environment of a base image, so the engine builds it once (it is most of an image's size).
    """
    docker = spec["docker"]
    base = docker["base_dockerfile"] or f"FROM {docker['base_image'] or DEFAULT_BASE_IMAGE}"
    torch_steps = [f"COPY torch {IMAGE_ROOT}/torch", f"RUN {_install(install_args, 'torch', has_cert)}"]
    return "\n".join(
        [
            base.rstrip(),
            "",
            "# Added by TrainHub: the environment's packages and the in-run SDK.",
            "USER root",
            f"COPY uv {IMAGE_ROOT}/uv",
            f"RUN {IMAGE_ROOT}/uv venv --no-python-downloads --python-preference only-system "
            f"--python {spec['python']} {ENV_ROOT}",
            *(torch_steps if torch else []),
            f"COPY build {IMAGE_ROOT}/build",
            f"RUN {_install(install_args, 'build', has_cert)} && rm -rf {IMAGE_ROOT}/build",
            f"COPY sdk {SDK_ROOT}",
            f"ENV VIRTUAL_ENV={ENV_ROOT} PATH={ENV_ROOT}/bin:{SYSTEM_PATH} PYTHONPATH={SDK_ROOT} PYTHONUNBUFFERED=1",
            "",
        ]
    )


def _install(install_args: list[str], folder: str, has_cert: bool) -> str:
    """The uv command installing the requirements.txt of a folder of the build context."""
    inputs = f"{IMAGE_ROOT}/{folder}"
    cert = f"SSL_CERT_FILE={inputs}/cert.pem " if has_cert else ""
    return " ".join(
        [
            f"{cert}{IMAGE_ROOT}/uv pip install --python {ENV_ROOT}/bin/python --no-cache --no-progress",
            "--color never",
            *install_args,
            f"--constraint {inputs}/constraints.txt -r {inputs}/requirements.txt",
        ]
    )


def _write_install_inputs(folder: Path, requirements: list[str], config: PipConfig) -> None:
    folder.mkdir()
    (folder / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
    constraints = [torch_constraints()] + [Path(path).read_text() for path in config.constraints]
    (folder / "constraints.txt").write_text("\n".join(constraints))
    if config.cert:
        shutil.copyfile(config.cert, folder / "cert.pem")


def _write_context(
    context: Path, spec: dict[str, Any], requirements: list[str], uv: Path, sdk: Path, served: str
) -> str:
    config = pip_config()
    torch = [entry for entry in requirements if canonicalize_name(Requirement(entry).name) == "torch"]
    _write_install_inputs(context / "build", requirements, config)
    if torch:
        _write_install_inputs(context / "torch", torch, config)
    shutil.copy2(uv, context / "uv")
    shutil.copytree(sdk, context / "sdk")
    text = dockerfile_text(spec, install_args(config, served), has_cert=bool(config.cert), torch=bool(torch))
    (context / "Dockerfile").write_text(text)
    return text


def install_args(config: PipConfig, served: str) -> list[str]:
    """uv's index options inside the build: the machine's, local folders turned into URLs of `served`."""
    args: list[str] = []
    if config.index_url:
        args += ["--index-url", _served_url(config.index_url, served)]
    for url in config.extra_index_urls:
        args += ["--extra-index-url", _served_url(url, served)]
    for link in config.find_links:
        args += ["--find-links", _served_url(link, served)]
    return args


def _local_folder(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def _served_url(location: str, served: str) -> str:
    folder = _local_folder(location)
    return location if folder is None else f"{served}{folder.as_posix().rstrip('/')}/"


def _bridge_gateway(client: Any) -> str:
    """The host's address on the build network, which build steps reach the host at."""
    network = client.networks.get(BUILD_NETWORK)
    for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
        if config.get("Gateway"):
            return str(config["Gateway"])
        if config.get("Subnet") and ":" not in config["Subnet"]:
            # The engine gives its bridge the subnet's first address unless told otherwise.
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    raise BuildError(f"The Docker engine's {BUILD_NETWORK!r} network has no IPv4 gateway to serve packages on.")


@contextmanager
def _local_folders_served(address: str) -> Iterator[str]:
    """http://ADDRESS:PORT serving the pip configuration's local folders (and nothing else)."""
    config = pip_config()
    locations = [*filter(None, [config.index_url]), *config.extra_index_urls, *config.find_links]
    folders = [folder.resolve() for location in locations if (folder := _local_folder(location))]
    # A file:// index's pages link to its files by relative paths (../../files/x.whl): serve the
    # index folder's parent, so they resolve.
    roots = tuple({folder.parent if folder.name == "simple" else folder for folder in folders})
    handler = functools.partial(_LocalFolderHandler, roots=roots)
    try:
        server = http.server.ThreadingHTTPServer((address, LOCAL_INDEX_PORT), handler)
    except OSError:  # another build serves there now: this one's install layers are not shared
        server = http.server.ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="image-build-index")
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _LocalFolderHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files under the given roots by their absolute paths; anything else is a 404."""

    def __init__(self, *args: Any, roots: tuple[Path, ...], **kwargs: Any) -> None:
        self.roots = roots
        super().__init__(*args, directory="/", **kwargs)

    def translate_path(self, path: str) -> str:
        resolved = Path(unquote(urlparse(path).path)).resolve()
        if any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            return str(resolved)
        return "/nonexistent-trainhub-path"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the build log says what was installed."""


def _stream_build(client: Any, context: str, tag: str, labels: dict[str, str], log: BuildLog) -> None:
    """Build with the engine, passing each line of its output to `log`; BuildError on failure."""
    output: list[str] = []
    pending = ""
    for chunk in client.api.build(
        path=context, tag=tag, labels=labels, network_mode=BUILD_NETWORK, rm=True, forcerm=True, pull=False, decode=True
    ):
        if "error" in chunk:
            for line in (pending + str(chunk["error"])).splitlines():
                output.append(line)
                log(line)
            raise BuildError(f"The image build failed: {last_error(chr(10).join(output))}")
        pending += ANSI_ESCAPE.sub("", str(chunk.get("stream", "")))
        *lines, pending = pending.split("\n")
        for line in lines:
            output.append(line.rstrip("\r"))
            log(line.rstrip("\r"))
    if pending:
        log(pending)

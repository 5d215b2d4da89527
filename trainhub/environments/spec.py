"""The one shape of an environment spec: validation, normalisation, hashing and its conda YAML form.

Django-free, so the builder (on nodes) and the benchmarks use it without a configured project.

    {
      "python": "3.11",                      # X.Y or X.Y.Z; the venv builder matches X.Y
      "pip": ["torch==2.13.0", "numpy"],     # requirement strings, in the user's order
      "conda": ["mkl=2024.0"],               # conda match specs outside the pip: section
      "channels": ["conda-forge"],
      "docker": {"enabled": False, "base_image": None, "base_dockerfile": None},
      "environment_variables": {"NAME": "value"},
      "user_managed_dependencies": True,     # only when true: see USER_MANAGED
    }
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement

DEFAULT_PYTHON = "3.11"
SPEC_KEYS = ("python", "pip", "conda", "channels", "docker", "environment_variables", "user_managed_dependencies")
# The cloud SDK's python.user_managed_dependencies: on compute_target="local" the run uses the
# submitter's own Python as it is (runs/local_execution.py); nodes build the spec's packages anyway.
# Kept in a normalised spec only when true, so that every spec without it keeps its hash.
USER_MANAGED = "user_managed_dependencies"
DOCKER_KEYS = ("enabled", "base_image", "base_dockerfile")

MAX_REQUIREMENTS = 500
MAX_REQUIREMENT_LENGTH = 1000
MAX_VARIABLES = 200
MAX_VALUE_LENGTH = 10_000
MAX_DOCKERFILE_LENGTH = 64 * 1024

PYTHON_PATTERN = re.compile(r"^3\.\d{1,2}(\.\d{1,3})?$")
VARIABLE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

UNKNOWN_KEYS = "Unknown key(s) in the environment spec: {keys}. Known keys: {known}."
BAD_PYTHON = "python must be a version such as 3.11 (X.Y or X.Y.Z), not {value!r}."
NOT_A_LIST = "{key} must be a list of strings."
TOO_MANY = "{key} lists {count} entries; at most {limit} are allowed."
PIP_OPTION = (
    "{entry!r} is a pip option: an environment's pip list holds requirements only. "
    "Where packages come from is the node's pip configuration (indexes, local wheel folders)."
)
BAD_REQUIREMENT = "{entry!r} in pip is not a valid requirement: {problem}"
LOCAL_REQUIREMENT = (
    "{entry!r} in pip names a file or folder: local paths and file:// URLs are refused, since "
    "whatever lies there would be built on the node. Publish the package to the node's pip "
    "indexes and ask for it by name."
)
DIRECT_URL_REQUIREMENT = (
    "{entry!r} in pip is a direct URL: this server installs packages from its pip indexes only "
    "(the administrator allows direct URLs with TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS=true)."
)
BARE_URL_REQUIREMENT = (
    "{entry!r} in pip is a URL without a package name: write it as 'name @ URL', which the "
    "administrator allows with TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS=true."
)
VARIABLE_IN_REQUIREMENT = (
    "{entry!r} in pip refers to an environment variable ('${{'): installers would expand it with "
    "the node's variables, so it is refused."
)
# Installers take a requirement that ends like an archive for a file of that name.
ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".egg")
# Schemes that fetch from elsewhere; anything else (file:, git+file:, a bare path) reads this machine.
REMOTE_URL = re.compile(r"^(?:(?:git|hg|svn|bzr)\+)?(?:https?|ssh|git)://", re.IGNORECASE)
CONDA_PYTHON = "Give the Python version as python ({entry!r} was in conda)."
DOCKER_NOT_A_MAPPING = "docker must be a mapping with enabled, base_image and base_dockerfile."
DOCKER_BOTH = "Give docker.base_image or docker.base_dockerfile, not both."
DOCKERFILE_ADD_URL = (
    "docker.base_dockerfile fetches a URL with ADD ({line!r}): the Docker engine fetches those "
    "itself, from the host's network, so they are refused. Download in a RUN step instead."
)
# An ADD whose source is a URL or a git remote (the engine fetches it, outside the build's network).
ADD_URL = re.compile(r"^\s*ADD\s.*(?:://|git@)", re.IGNORECASE)
BAD_VARIABLE = "Environment variable names are letters, digits and '_', not starting with a digit: {name!r}."
USER_MANAGED_NOT_BOOL = "user_managed_dependencies must be true or false, not {value!r}."
VARIABLES_NOT_A_MAPPING = "environment_variables must be a mapping of names to values."


class SpecError(ValueError):
    """The spec is malformed; the message says what to change."""


def normalise_spec(raw: Mapping[str, Any] | None, *, allow_direct_urls: bool = False) -> dict[str, Any]:
    """The canonical form of a spec: every key present (user_managed_dependencies only when true),
    strings stripped, defaults filled in.

    Local paths and file:// URLs in pip are always refused; direct URLs (name @ https://…) only
    unless `allow_direct_urls` (the administrator's TRAINHUB_ALLOW_DIRECT_URL_REQUIREMENTS).
    Idempotent, so a stored (already normalised) spec comes back unchanged.
    """
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise SpecError("An environment spec must be a mapping.")
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise SpecError(UNKNOWN_KEYS.format(keys=", ".join(unknown), known=", ".join(SPEC_KEYS)))
    user_managed = raw.get(USER_MANAGED, False)
    if not isinstance(user_managed, bool):
        raise SpecError(USER_MANAGED_NOT_BOOL.format(value=user_managed))
    normalised: dict[str, Any] = {
        "python": _python(raw.get("python")),
        "pip": [_requirement(entry, allow_direct_urls) for entry in _strings("pip", raw.get("pip"))],
        "conda": [_conda(entry) for entry in _strings("conda", raw.get("conda"))],
        "channels": _strings("channels", raw.get("channels")),
        "docker": _docker(raw.get("docker")),
        "environment_variables": _variables(raw.get("environment_variables")),
    }
    if user_managed:
        normalised[USER_MANAGED] = True
    return normalised


def canonical_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(spec: Mapping[str, Any]) -> str:
    """sha256 of the normalised spec as canonical JSON: the key of its builds and its identity.

    Hashing is not admitting: a stored spec with a direct URL keeps its hash whatever the setting.
    """
    return hashlib.sha256(canonical_json(normalise_spec(spec, allow_direct_urls=True)).encode()).hexdigest()


def to_conda_yaml(spec: Mapping[str, Any], name: str = "project_environment") -> str:
    """The conda environment file of a (normalised) spec, as `save_to_directory` writes it."""
    dependencies: list[Any] = [f"python={spec['python']}", *spec["conda"]]
    if spec["pip"]:
        dependencies.append({"pip": list(spec["pip"])})
    document: dict[str, Any] = {"name": name}
    if spec["channels"]:
        document["channels"] = list(spec["channels"])
    document["dependencies"] = dependencies
    if spec["environment_variables"]:
        document["variables"] = dict(spec["environment_variables"])
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _python(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_PYTHON
    text = str(value).strip()
    if not PYTHON_PATTERN.match(text):
        raise SpecError(BAD_PYTHON.format(value=value))
    return text


def _strings(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError(NOT_A_LIST.format(key=key))
    entries = []
    for item in value:
        if not isinstance(item, str):
            raise SpecError(NOT_A_LIST.format(key=key))
        item = item.strip()
        if item:
            entries.append(item)
    if len(entries) > MAX_REQUIREMENTS:
        raise SpecError(TOO_MANY.format(key=key, count=len(entries), limit=MAX_REQUIREMENTS))
    return entries


def _requirement(entry: str, allow_direct_urls: bool) -> str:
    if entry.startswith("-"):
        raise SpecError(PIP_OPTION.format(entry=entry))
    if len(entry) > MAX_REQUIREMENT_LENGTH:
        raise SpecError(BAD_REQUIREMENT.format(entry=entry[:80] + "…", problem="too long"))
    if "${" in entry:
        raise SpecError(VARIABLE_IN_REQUIREMENT.format(entry=entry))
    try:
        requirement = Requirement(entry)
    except InvalidRequirement as error:
        if "://" in entry or entry.lower().startswith(("git+", "hg+", "svn+", "bzr+")):
            raise SpecError(
                (BARE_URL_REQUIREMENT if REMOTE_URL.match(entry) else LOCAL_REQUIREMENT).format(entry=entry)
            ) from None
        if entry.startswith((".", "/", "~", "\\")) or "/" in entry or "\\" in entry:
            raise SpecError(LOCAL_REQUIREMENT.format(entry=entry)) from None
        problem = str(error).splitlines()[0]
        raise SpecError(BAD_REQUIREMENT.format(entry=entry, problem=problem)) from None
    if requirement.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise SpecError(LOCAL_REQUIREMENT.format(entry=entry))
    if requirement.url is not None:
        if not REMOTE_URL.match(requirement.url):
            raise SpecError(LOCAL_REQUIREMENT.format(entry=entry))
        if not allow_direct_urls:
            raise SpecError(DIRECT_URL_REQUIREMENT.format(entry=entry))
    return entry


def conda_package_name(entry: str) -> str:
    """The package a conda match spec names: "conda-forge::numpy=1.26=py311_0" → "numpy"."""
    return re.split(r"[\s=<>!~\[]", entry.split("::")[-1].strip(), maxsplit=1)[0].lower()


def _conda(entry: str) -> str:
    if "://" in entry or entry.startswith((".", "/", "~")):
        raise SpecError(
            f"{entry!r} in conda is a URL or a path: conda entries name packages, which the "
            "builder installs from the node's pip indexes."
        )
    if conda_package_name(entry) == "python":
        raise SpecError(CONDA_PYTHON.format(entry=entry))
    if len(entry) > MAX_REQUIREMENT_LENGTH:
        raise SpecError(f"The conda entry {entry[:80]!r}… is too long.")
    return entry


def _docker(value: Any) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise SpecError(DOCKER_NOT_A_MAPPING)
    unknown = sorted(set(value) - set(DOCKER_KEYS))
    if unknown:
        raise SpecError(
            UNKNOWN_KEYS.format(
                keys=", ".join(f"docker.{k}" for k in unknown),
                known=", ".join(f"docker.{k}" for k in DOCKER_KEYS),
            )
        )
    enabled = value.get("enabled", False)
    if not isinstance(enabled, bool):
        raise SpecError("docker.enabled must be true or false.")
    base_image = _optional_text("docker.base_image", value.get("base_image"), 500)
    dockerfile = _optional_text("docker.base_dockerfile", value.get("base_dockerfile"), MAX_DOCKERFILE_LENGTH)
    if base_image and dockerfile:
        raise SpecError(DOCKER_BOTH)
    if dockerfile:
        # Instructions continue over lines ending in the escape character (\\, or ` by directive).
        for line in re.sub(r"[\\`]\r?\n", " ", dockerfile).splitlines():
            if ADD_URL.match(line):
                raise SpecError(DOCKERFILE_ADD_URL.format(line=line.strip()[:200]))
    return {"enabled": enabled, "base_image": base_image, "base_dockerfile": dockerfile}


def _optional_text(key: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"{key} must be a string.")
    # A Dockerfile's own lines matter; only surrounding blank space is dropped.
    value = value.strip()
    if len(value) > limit:
        raise SpecError(f"{key} is longer than {limit} characters.")
    return value or None


def _variables(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(VARIABLES_NOT_A_MAPPING)
    if len(value) > MAX_VARIABLES:
        raise SpecError(TOO_MANY.format(key="environment_variables", count=len(value), limit=MAX_VARIABLES))
    variables = {}
    for name, text in value.items():
        if not isinstance(name, str) or not VARIABLE_PATTERN.match(name):
            raise SpecError(BAD_VARIABLE.format(name=name))
        if isinstance(text, (dict, list)) or text is None:
            raise SpecError(f"The value of environment variable {name} must be a string.")
        text = str(text).lower() if isinstance(text, bool) else str(text)
        if len(text) > MAX_VALUE_LENGTH:
            raise SpecError(f"The value of environment variable {name} is longer than {MAX_VALUE_LENGTH}.")
        variables[name] = text
    return dict(sorted(variables.items()))

"""`Environment`: what a run's code runs in, with the guide's names (get, list, register, clone…).

Standard library only at import time (PyYAML is imported when a conda file is read or written),
so that it loads inside runs, whose environments hold only the in-run SDK.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from trainhub.sdk.exceptions import UserErrorException

RESERVED_PREFIX = "TrainHub-"
DEFINITION_FILE = "trainhub_environment.json"
# The guide's cloud SDK writes this name; a folder it saved loads here too.
AZURE_DEFINITION_FILE = "azureml_environment.json"
CONDA_FILE = "conda_dependencies.yml"

RESERVED_NAME = (
    "Names starting with 'TrainHub-' are reserved for curated environments, which administrators "
    "make in the admin site. Choose a name of your own."
)
BAD_YAML = "{path} is not valid YAML: {problem}."
NOT_CONDA = "{path} is not a conda environment file: {problem}."
BAD_PYTHON = "{path}: give the Python version as python=X.Y (found {entry!r})."
PIP_OPTION = (
    "{path}, line {line}: {text!r} is a pip option. An environment's requirements list packages "
    "only; "
    "where they come from is decided by the nodes' pip configuration."
)
ALREADY_SAVED = "{path} already holds a saved environment: pass overwrite=True to replace it."
NO_DEFINITION = "No saved environment in {path}: it has neither {ours} nor {azure}."
AZUREML_PACKAGE_PREFIX = "azureml-"
AZUREML_LEFT_OUT = (
    "{where}: left out {packages}: the cloud SDK's packages are not installed in TrainHub runs, "
    "which have TrainHub's in-run SDK (import it as trainhub.sdk)."
)
STANDS_IN = (
    "{asked} is TrainHub's curated environment {name} here: the packages and versions inside are "
    "{name}'s, not those the name says (Environment.get(ws, '{name}').python.conda_dependencies "
    "lists them)."
)
CHANGED_CURATED = (
    "{name} is a curated environment and cannot be changed: clone it first, e.g. env = env.clone(new_name='my-env')."
)

_PYTHON_ENTRY = re.compile(r"^python\s*(?:==?|\s)\s*(\d+\.\d+(?:\.\d+)?)(?:\.?\*)?$", re.IGNORECASE)


def _package_name(entry: str) -> str:
    return re.split(r"[\s=<>!~\[;@]", entry.split("::")[-1].strip(), maxsplit=1)[0].lower()


def split_cloud_sdk_packages(packages: list[str]) -> tuple[list[str], list[str]]:
    """(the pip packages to install, the cloud SDK's own among them: azureml-defaults, azureml-core, …)."""
    kept: list[str] = []
    dropped: list[str] = []
    for package in packages:
        (dropped if _package_name(package).startswith(AZUREML_PACKAGE_PREFIX) else kept).append(package)
    return kept, dropped


def _without_azureml(packages: list[str], where: str) -> list[str]:
    """The pip packages but the cloud SDK's own, each left out with a warning: a TrainHub run
    already has the in-run SDK."""
    kept, dropped = split_cloud_sdk_packages(packages)
    if dropped:
        warnings.warn(AZUREML_LEFT_OUT.format(where=where, packages=", ".join(dropped)), stacklevel=3)
    return kept


def _yaml():
    try:
        import yaml  # optional: only conda files need it, and the in-run SDK has none
    except ImportError:
        raise UserErrorException("Reading or writing conda files needs PyYAML: pip install pyyaml.") from None
    return yaml


class CondaDependencies:
    """The packages of an environment, in the shape of a conda environment file."""

    def __init__(
        self,
        *,
        python_version: str | None = None,
        conda_packages: list[str] | None = None,
        pip_packages: list[str] | None = None,
        channels: list[str] | None = None,
    ):
        self._python_version = python_version
        self._conda_packages = list(conda_packages or [])
        self._pip_packages = list(pip_packages or [])
        self._channels = list(channels or [])

    @classmethod
    def create(
        cls,
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        python_version: str | None = None,
        pin_sdk_version: bool = True,
    ) -> CondaDependencies:
        return cls(
            python_version=python_version,
            conda_packages=conda_packages,
            pip_packages=_without_azureml(list(pip_packages or []), "CondaDependencies.create"),
        )

    @property
    def pip_packages(self) -> list[str]:
        return list(self._pip_packages)

    @property
    def conda_packages(self) -> list[str]:
        return list(self._conda_packages)

    @property
    def conda_channels(self) -> list[str]:
        return list(self._channels)

    def get_python_version(self) -> str | None:
        return self._python_version

    def set_python_version(self, version: str) -> None:
        self._python_version = str(version)

    def add_pip_package(self, pip_package: str) -> None:
        if not _without_azureml([pip_package], "add_pip_package"):
            return
        self.remove_pip_package(_package_name(pip_package))
        self._pip_packages.append(pip_package)

    def remove_pip_package(self, pip_package: str) -> None:
        name = _package_name(pip_package)
        self._pip_packages = [p for p in self._pip_packages if _package_name(p) != name]

    def add_conda_package(self, conda_package: str) -> None:
        name = _package_name(conda_package)
        if name == "python":
            version = _PYTHON_ENTRY.match(conda_package.strip())
            if not version:
                raise UserErrorException(BAD_PYTHON.format(path="add_conda_package", entry=conda_package))
            self._python_version = version.group(1)
            return
        self._conda_packages = [p for p in self._conda_packages if _package_name(p) != name]
        self._conda_packages.append(conda_package)

    def add_channel(self, channel: str) -> None:
        if channel not in self._channels:
            self._channels.append(channel)

    def serialize_to_string(self, name: str = "project_environment", variables: dict[str, str] | None = None) -> str:
        dependencies: list[Any] = []
        if self._python_version:
            dependencies.append(f"python={self._python_version}")
        dependencies += self._conda_packages
        if self._pip_packages:
            dependencies.append({"pip": list(self._pip_packages)})
        document: dict[str, Any] = {"name": name}
        if self._channels:
            document["channels"] = list(self._channels)
        document["dependencies"] = dependencies
        if variables:
            document["variables"] = dict(variables)
        return _yaml().safe_dump(document, sort_keys=False, default_flow_style=False)

    def save(self, path: str | os.PathLike[str]) -> str:
        Path(path).write_text(self.serialize_to_string())
        return str(path)

    @classmethod
    def _from_conda_file(cls, path: str | os.PathLike[str]) -> tuple[CondaDependencies, dict[str, str]]:
        """The dependencies of a conda environment file, and its `variables:` section."""
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise UserErrorException(f"Cannot read {source}: {error.strerror or error}.") from None
        yaml = _yaml()
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise UserErrorException(BAD_YAML.format(path=source, problem=f"{problem}{where}")) from None
        if not isinstance(document, dict):
            raise UserErrorException(
                NOT_CONDA.format(path=source, problem="it should be a mapping with a dependencies: list")
            )
        dependencies = document.get("dependencies") or []
        if not isinstance(dependencies, list):
            raise UserErrorException(NOT_CONDA.format(path=source, problem="dependencies: must be a list"))
        conda = cls()
        for entry in dependencies:
            if isinstance(entry, dict) and set(entry) == {"pip"}:
                packages = entry["pip"] or []
                if not isinstance(packages, list) or not all(isinstance(p, (str, int, float)) for p in packages):
                    raise UserErrorException(NOT_CONDA.format(path=source, problem="pip: must be a list of packages"))
                conda._pip_packages += [str(p).strip() for p in packages if str(p).strip()]
            elif isinstance(entry, str):
                entry = entry.strip()
                name = _package_name(entry)
                if name == "python":
                    version = _PYTHON_ENTRY.match(entry)
                    if not version:
                        raise UserErrorException(BAD_PYTHON.format(path=source, entry=entry))
                    conda._python_version = version.group(1)
                elif name != "pip":  # pip itself: a virtualenv's installer needs no conda package
                    conda._conda_packages.append(entry)
            else:
                raise UserErrorException(
                    NOT_CONDA.format(path=source, problem=f"unexpected entry {entry!r} under dependencies")
                )
        channels = document.get("channels") or []
        if not isinstance(channels, list):
            raise UserErrorException(NOT_CONDA.format(path=source, problem="channels: must be a list"))
        conda._channels = [str(c) for c in channels]
        conda._pip_packages = _without_azureml(conda._pip_packages, source)
        variables = document.get("variables") or {}
        if not isinstance(variables, dict):
            raise UserErrorException(NOT_CONDA.format(path=source, problem="variables: must be a mapping"))
        return conda, {str(k): str(v) for k, v in variables.items()}

    def __repr__(self) -> str:
        return (
            f"CondaDependencies(python={self._python_version!r}, conda={self._conda_packages!r}, "
            f"pip={self._pip_packages!r})"
        )


class PythonSection:
    def __init__(self) -> None:
        self.conda_dependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path: str | None = None


class DockerSection:
    """enabled: nodes with a Docker engine build the environment as an image (from base_image, or
    base_dockerfile's text, or TrainHub's local base image) and run it in containers."""

    def __init__(self) -> None:
        self.enabled = False
        self.base_image: str | None = None
        self.base_dockerfile: str | None = None

    def __repr__(self) -> str:
        return f"DockerSection(enabled={self.enabled!r}, base_image={self.base_image!r})"


def _read_requirements(path: Path, seen: set[Path]) -> list[str]:
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserErrorException(f"Cannot read {path}: {error.strerror or error}.") from None
    requirements: list[str] = []
    pending = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = (pending + line).strip(), ""
        if not line:
            continue
        included = re.match(r"^(?:-r|--requirement)(?:\s+|=)(.+)$", line)
        if included:
            requirements += _read_requirements(path.parent / included.group(1).strip(), seen)
        elif line.startswith("-"):
            raise UserErrorException(PIP_OPTION.format(path=path, line=number, text=line))
        else:
            requirements.append(line)
    return requirements


class Environment:
    """A named, versioned environment: curated (shared, `TrainHub-…`) or a workspace's own."""

    def __init__(self, name: str):
        self.name = name
        self.version: int | None = None
        self.description = ""
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables: dict[str, str] = {}
        self.is_curated = False
        self.deprecated = False
        self.answers_to: list[str] = []
        self._registered_spec: dict[str, Any] | None = None
        self._registered_in: tuple[str, str] | None = None

    # ------------------------------------------------------------ the spec

    def _spec(self) -> dict[str, Any]:
        conda = self.python.conda_dependencies
        return {
            "python": conda.get_python_version(),
            "pip": conda.pip_packages,
            "conda": conda.conda_packages,
            "channels": conda.conda_channels,
            "docker": {
                "enabled": bool(self.docker.enabled),
                "base_image": self.docker.base_image or None,
                "base_dockerfile": self.docker.base_dockerfile or None,
            },
            "environment_variables": {str(k): str(v) for k, v in self.environment_variables.items()},
            # Only when true, as the server keeps it (trainhub/environments/spec.py).
            **({"user_managed_dependencies": True} if self.python.user_managed_dependencies else {}),
        }

    def _set_spec(self, spec: dict[str, Any]) -> None:
        self.python.conda_dependencies = CondaDependencies(
            python_version=spec.get("python"),
            conda_packages=spec.get("conda") or [],
            pip_packages=spec.get("pip") or [],
            channels=spec.get("channels") or [],
        )
        docker = spec.get("docker") or {}
        self.docker.enabled = bool(docker.get("enabled"))
        self.docker.base_image = docker.get("base_image")
        self.docker.base_dockerfile = docker.get("base_dockerfile")
        self.environment_variables = dict(spec.get("environment_variables") or {})
        self.python.user_managed_dependencies = bool(spec.get("user_managed_dependencies"))

    @classmethod
    def _from_server(cls, body: dict[str, Any], workspace: Any) -> Environment:
        environment = cls(body["name"])
        environment._load_server(body, workspace)
        return environment

    def _load_server(self, body: dict[str, Any], workspace: Any) -> None:
        self.name = body["name"]
        self.version = body["version"]
        self.description = body.get("description", "")
        self.is_curated = bool(body.get("curated"))
        self.deprecated = bool(body.get("deprecated"))
        self.answers_to = list(body.get("answers_to") or [])
        self._set_spec(body["spec"])
        self._registered_spec = self._spec()
        self._registered_in = ("*", "*") if self.is_curated else (workspace.url, workspace.name)

    def _is_registered_for(self, workspace: Any) -> bool:
        if self.version is None or self._registered_spec != self._spec():
            return False
        return self._registered_in in (("*", "*"), (workspace.url, workspace.name))

    # ------------------------------------------------------------ server

    @classmethod
    def get(cls, workspace: Any, name: str, version: int | str | None = None) -> Environment:
        """The latest version of `name` (curated or the workspace's own), or the one given."""
        body = workspace._store.get_environment(name, None if version is None else int(version))
        environment = cls._from_server(body, workspace)
        if environment.name.lower() != name.lower():
            warnings.warn(STANDS_IN.format(asked=name, name=environment.name), stacklevel=2)
        if environment.deprecated:
            warnings.warn(
                f"Environment {name} is deprecated: it still works, but prefer a newer one "
                "(Environment.list(workspace) shows them).",
                stacklevel=2,
            )
        return environment

    @classmethod
    def list(cls, workspace: Any) -> dict[str, Environment]:
        """The latest version of every environment the workspace sees, by name."""
        return {body["name"]: cls._from_server(body, workspace) for body in workspace._store.list_environments()}

    def register(self, workspace: Any) -> Environment:
        """Register this spec as the next version (an unchanged spec keeps its version)."""
        if self.is_curated and self._registered_spec == self._spec():
            return self
        if self.is_curated:
            raise UserErrorException(CHANGED_CURATED.format(name=self.name))
        body = workspace._store.register_environment(
            {"name": self.name, "spec": self._spec(), "description": self.description}
        )
        self._load_server(body, workspace)
        return self

    def _ensure_registered(self, workspace: Any) -> tuple[str, int]:
        """(name, version) to submit a run with, registering this spec first when it is new."""
        if not self._is_registered_for(workspace):
            self.register(workspace)
        assert self.version is not None
        return self.name, self.version

    def _to_submission(self, workspace: Any) -> dict[str, Any]:
        """How a submit names this environment: by name and version where the workspace has this
        very spec, else by name with the spec, which the server registers as the environment's
        next version in the submit itself (one request; a refused submit registers nothing)."""
        if self._is_registered_for(workspace):
            return {"name": self.name, "version": self.version}
        if self.is_curated:
            raise UserErrorException(CHANGED_CURATED.format(name=self.name))
        return {"name": self.name, "spec": self._spec(), "description": self.description}

    def _submitted(self, recorded: dict[str, Any], workspace: Any) -> None:
        """The submit registered this spec (or found it): the version the run recorded is this
        environment's, as `register` would have made it."""
        if self._is_registered_for(workspace):
            return
        self.name, self.version = recorded["name"], recorded["version"]
        self._registered_spec = self._spec()
        self._registered_in = (workspace.url, workspace.name)

    # ------------------------------------------------------------ local

    def clone(self, new_name: str) -> Environment:
        """A copy under `new_name`, unregistered (`register` or a run submission does that)."""
        if new_name.strip().lower().startswith(RESERVED_PREFIX.lower()):
            raise UserErrorException(RESERVED_NAME)
        clone = copy.deepcopy(self)
        clone.name = new_name.strip()
        clone.version = None
        clone.description = ""
        clone.is_curated = False
        clone.deprecated = False
        clone._registered_spec = None
        clone._registered_in = None
        return clone

    def save_to_directory(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the conda specification and a definition file that `load_from_directory` reads."""
        folder = Path(path)
        definition_path, conda_path = folder / DEFINITION_FILE, folder / CONDA_FILE
        if not overwrite and (definition_path.exists() or conda_path.exists()):
            raise UserErrorException(ALREADY_SAVED.format(path=folder))
        folder.mkdir(parents=True, exist_ok=True)
        conda_path.write_text(self.python.conda_dependencies.serialize_to_string(name=self.name))
        definition = {
            "name": self.name,
            "version": self.version,
            "python": {
                "userManagedDependencies": bool(self.python.user_managed_dependencies),
                "interpreterPath": self.python.interpreter_path,
                "condaDependenciesFile": CONDA_FILE,
            },
            "docker": {
                "enabled": bool(self.docker.enabled),
                "baseImage": self.docker.base_image,
                "baseDockerfile": self.docker.base_dockerfile,
            },
            "environmentVariables": dict(self.environment_variables),
        }
        definition_path.write_text(json.dumps(definition, indent=2) + "\n")

    @classmethod
    def load_from_directory(cls, path: str | os.PathLike[str]) -> Environment:
        """The environment `save_to_directory` wrote (unregistered until registered or used)."""
        folder = Path(path)
        definition_path = folder / DEFINITION_FILE
        if not definition_path.is_file():
            definition_path = folder / AZURE_DEFINITION_FILE
        if not definition_path.is_file():
            raise UserErrorException(
                NO_DEFINITION.format(path=folder, ours=DEFINITION_FILE, azure=AZURE_DEFINITION_FILE)
            )
        try:
            definition = json.loads(definition_path.read_text())
        except ValueError as error:
            raise UserErrorException(f"{definition_path} is not valid JSON: {error}.") from None
        environment = cls(str(definition.get("name") or folder.name))
        python = definition.get("python") or {}
        conda_file = python.get("condaDependenciesFile") or CONDA_FILE
        if (folder / conda_file).is_file():
            environment.python.conda_dependencies, variables = CondaDependencies._from_conda_file(folder / conda_file)
            environment.environment_variables.update(variables)
        environment.python.user_managed_dependencies = bool(python.get("userManagedDependencies"))
        environment.python.interpreter_path = python.get("interpreterPath")
        docker = definition.get("docker") or {}
        environment.docker.enabled = bool(docker.get("enabled"))
        environment.docker.base_image = docker.get("baseImage")
        environment.docker.base_dockerfile = docker.get("baseDockerfile")
        environment.environment_variables.update(
            {str(k): str(v) for k, v in (definition.get("environmentVariables") or {}).items()}
        )
        return environment

    @classmethod
    def from_conda_specification(cls, name: str, file_path: str | os.PathLike[str]) -> Environment:
        """From a conda environment file: python=X.Y, conda packages, pip: section, variables:."""
        environment = cls(name)
        environment.python.conda_dependencies, variables = CondaDependencies._from_conda_file(file_path)
        environment.environment_variables.update(variables)
        return environment

    @classmethod
    def from_pip_requirements(
        cls, name: str, file_path: str | os.PathLike[str], pip_version: str | None = None
    ) -> Environment:
        """From a pip requirements file (comments, continuations and -r includes are followed)."""
        environment = cls(name)
        environment.python.conda_dependencies = CondaDependencies(
            pip_packages=_read_requirements(Path(file_path), set())
        )
        return environment

    @classmethod
    def from_docker_image(
        cls,
        name: str,
        image: str,
        container_registry: Any = None,
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        environment = cls._with_packages(name, conda_specification, pip_requirements)
        environment.docker.enabled = True
        environment.docker.base_image = image
        return environment

    @classmethod
    def from_dockerfile(
        cls,
        name: str,
        dockerfile: str,
        conda_specification: str | os.PathLike[str] | None = None,
        pip_requirements: str | os.PathLike[str] | None = None,
    ) -> Environment:
        """`dockerfile` is the Dockerfile's text, or the path of one."""
        environment = cls._with_packages(name, conda_specification, pip_requirements)
        if "\n" not in dockerfile and os.path.isfile(dockerfile):
            dockerfile = Path(dockerfile).read_text()
        environment.docker.enabled = True
        environment.docker.base_dockerfile = dockerfile
        return environment

    @classmethod
    def _with_packages(cls, name: str, conda_specification: Any, pip_requirements: Any) -> Environment:
        if conda_specification is not None:
            return cls.from_conda_specification(name, conda_specification)
        if pip_requirements is not None:
            return cls.from_pip_requirements(name, pip_requirements)
        return cls(name)

    def __repr__(self) -> str:
        return f"Environment(name={self.name!r}, version={self.version!r})"

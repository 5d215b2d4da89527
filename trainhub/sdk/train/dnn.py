"""The older edition's `PyTorch` estimator: a ScriptRunConfig under the guide's 2018 names.

`script_params` become the script's arguments (values handed through untouched, so data
references still expand on the node), `pip_packages`/`conda_packages` extend the curated
PyTorch environment, and `node_count`/`process_count_per_node`/`distributed_backend` choose
the distributed launch, as in the guide.
"""

from __future__ import annotations

import os
from typing import Any

from trainhub.sdk.environment import Environment
from trainhub.sdk.exceptions import UserErrorException
from trainhub.sdk.runconfig import MpiConfiguration, PyTorchConfiguration
from trainhub.sdk.script_run_config import DEFAULT_ENVIRONMENT, ScriptRunConfig

# The environment an estimator with extra packages registers: the curated one plus those packages.
ESTIMATOR_ENVIRONMENT = "pytorch-estimator"
BACKENDS = ("mpi", "gloo", "nccl")
NO_BACKEND = (
    "node_count={nodes} and process_count_per_node={per_node} ask for a distributed run: also give "
    "distributed_backend='mpi' (Horovod), or 'gloo' / 'nccl' for torch.distributed."
)
UNKNOWN_BACKEND = "distributed_backend={backend!r} is not one of: " + ", ".join(BACKENDS) + "."
TWO_BACKENDS = "Give either distributed_training={given} or distributed_backend={backend!r}, not both."
PACKAGES_AND_ENVIRONMENT = (
    "Give either environment_definition or pip_packages/conda_packages, not both: add the "
    "packages to the environment instead."
)


class Mpi:
    """`distributed_training=Mpi()`: launched with mpirun, as Horovod expects."""

    backend = "mpi"

    def __init__(self, process_count_per_node: int = 1):
        self.process_count_per_node = process_count_per_node

    def __repr__(self) -> str:
        return f"Mpi(process_count_per_node={self.process_count_per_node})"


class Gloo:
    """`distributed_training=Gloo()`: torch.distributed on CPU (or GPU), one process per node
    unless the estimator's process_count_per_node says more."""

    backend = "gloo"

    def __repr__(self) -> str:
        return "Gloo()"


class Nccl:
    """`distributed_training=Nccl()`: torch.distributed with NCCL (GPU nodes only; the CPU build of
    torch has no NCCL, which the script's init_process_group says)."""

    backend = "nccl"

    def __repr__(self) -> str:
        return "Nccl()"


class PyTorch(ScriptRunConfig):
    """`PyTorch(source_directory, compute_target=..., entry_script=..., script_params=...)`.

    `framework_version` is accepted as the guide passes it, and ignored: the curated PyTorch
    environment (or `environment_definition`) decides the version.
    """

    def __init__(
        self,
        source_directory: str | os.PathLike[str],
        *,
        compute_target: Any = None,
        entry_script: str | None = None,
        script_params: dict[str, Any] | None = None,
        node_count: int = 1,
        process_count_per_node: int = 1,
        distributed_backend: str | None = None,
        distributed_training: Mpi | Gloo | Nccl | None = None,
        use_gpu: bool = False,
        pip_packages: list[str] | None = None,
        conda_packages: list[str] | None = None,
        environment_definition: Any = None,
        environment_variables: dict[str, str] | None = None,
        framework_version: str | None = None,
        max_run_duration_seconds: int | None = None,
    ):
        if environment_definition is not None and (pip_packages or conda_packages):
            raise UserErrorException(PACKAGES_AND_ENVIRONMENT)
        if distributed_training is not None:
            if distributed_backend is not None:
                raise UserErrorException(TWO_BACKENDS.format(given=distributed_training, backend=distributed_backend))
            distributed_backend = distributed_training.backend
            if isinstance(distributed_training, Mpi) and process_count_per_node == 1:
                process_count_per_node = distributed_training.process_count_per_node
        super().__init__(
            source_directory=source_directory,
            script=entry_script,
            arguments=script_arguments(script_params),
            compute_target=compute_target,
            environment=environment_definition,
            distributed_job_config=distributed_config(node_count, process_count_per_node, distributed_backend),
            max_run_duration_seconds=max_run_duration_seconds,
        )
        self.use_gpu = bool(use_gpu)
        self.pip_packages = list(pip_packages or [])
        self.conda_packages = list(conda_packages or [])
        self.environment_variables = dict(environment_variables or {})

    def _submission(self, workspace: Any) -> dict[str, Any]:
        # Without additions, the curated PyTorch environment is the default the server looks up.
        if self.environment is None and (self.pip_packages or self.conda_packages or self.environment_variables):
            self.environment = self._estimator_environment(workspace)
        return super()._submission(workspace)

    def _estimator_environment(self, workspace: Any) -> Any:
        """The curated PyTorch environment with what the estimator adds to it."""
        curated = Environment.get(workspace=workspace, name=DEFAULT_ENVIRONMENT)
        environment = curated.clone(new_name=ESTIMATOR_ENVIRONMENT)
        dependencies = environment.python.conda_dependencies
        for package in self.pip_packages:
            dependencies.add_pip_package(package)
        for package in self.conda_packages:
            dependencies.add_conda_package(package)
        environment.environment_variables.update(self.environment_variables)
        return environment


def script_arguments(script_params: dict[str, Any] | None) -> list[Any]:
    """`{'--lr': 0.1, '--verbose': ''}` → `['--lr', 0.1, '--verbose']`; values are kept as objects."""
    arguments: list[Any] = []
    for key, value in (script_params or {}).items():
        arguments.append(key)
        if not (isinstance(value, str) and value == ""):
            arguments.append(value)
    return arguments


def distributed_config(node_count: int, process_count_per_node: int, backend: str | None) -> Any:
    """MPI for 'mpi' (as Horovod expects), a per-process torch.distributed launch for gloo/nccl."""
    if backend is None:
        if node_count > 1 or process_count_per_node > 1:
            raise UserErrorException(NO_BACKEND.format(nodes=node_count, per_node=process_count_per_node))
        return None
    if backend.lower() not in BACKENDS:
        raise UserErrorException(UNKNOWN_BACKEND.format(backend=backend))
    if backend.lower() == "mpi":
        return MpiConfiguration(process_count_per_node=process_count_per_node, node_count=node_count)
    return PyTorchConfiguration(
        communication_backend=backend.capitalize(),
        process_count=node_count * process_count_per_node,
        node_count=node_count,
    )

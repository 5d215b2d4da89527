"""`ComputeTarget` and `AmlCompute`: named clusters of nodes, as in the guide; `SlurmCompute`: a
partition of an existing Slurm cluster, attached as the cloud SDK attaches existing compute."""

from __future__ import annotations

import builtins
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk.exceptions import ComputeTargetException


@dataclass
class AmlComputeProvisioningConfiguration:
    vm_size: str = "STANDARD_D2_V2"
    min_nodes: int = 0
    max_nodes: int = 4
    idle_seconds_before_scaledown: int = 1800
    provisioner: str = "local"


@dataclass
class SlurmComputeAttachConfiguration:
    partition: str
    vm_size: str = "LOCAL_CPU"


class AmlComputeStatus:
    """What `ComputeTarget.get_status()` answers; `serialize()` gives the cloud SDK's keys."""

    def __init__(self, details: dict[str, Any]):
        self.current_node_count: int = details["current_node_count"]
        self.target_node_count: int = details["target_node_count"]
        self.idle_node_count: int = details["idle_node_count"]
        self.running_node_count: int = details["running_node_count"]
        self.preparing_node_count: int = details["preparing_node_count"]
        self.leaving_node_count: int = details["leaving_node_count"]
        self.allocation_state: str = details["allocation_state"]
        self.provisioning_state: str = details["provisioning_state"]
        self.creation_time: str = str(details["created_at"])
        self.vm_size: str = details["vm_size"]
        self.scale_settings = {
            "minNodeCount": details["min_nodes"],
            "maxNodeCount": details["max_nodes"],
            "nodeIdleTimeBeforeScaleDown": f"PT{details['idle_seconds_before_scaledown']}S",
        }
        self.node_state_counts = {
            "idleNodeCount": self.idle_node_count,
            "runningNodeCount": self.running_node_count,
            "preparingNodeCount": self.preparing_node_count,
            "leavingNodeCount": self.leaving_node_count,
            # TrainHub's nodes are never preempted; a lost node is gone, not unusable.
            "unusableNodeCount": 0,
            "preemptedNodeCount": 0,
        }

    def serialize(self) -> dict[str, Any]:
        return {
            "currentNodeCount": self.current_node_count,
            "targetNodeCount": self.target_node_count,
            "nodeStateCounts": dict(self.node_state_counts),
            "allocationState": self.allocation_state,
            "errors": None,
            "creationTime": self.creation_time,
            "provisioningState": self.provisioning_state,
            "scaleSettings": dict(self.scale_settings),
            "vmPriority": "Dedicated",
            "vmSize": self.vm_size,
        }

    def __repr__(self) -> str:
        return f"AmlComputeStatus({self.serialize()!r})"


class ComputeTarget:
    """`ComputeTarget(workspace=ws, name=...)` finds an existing target or raises ComputeTargetException."""

    def __init__(self, workspace: Any, name: str, _details: dict[str, Any] | None = None):
        self.workspace = workspace
        self.name = name
        if _details is None:
            try:
                _details = workspace._store.get_compute(name)
            except exceptions.NotFoundError:
                raise ComputeTargetException(
                    f"ComputeTargetNotFound: no compute target named {name!r} in workspace {workspace.name!r}."
                ) from None
        self._details = _details

    @staticmethod
    def create(
        workspace: Any, name: str, provisioning_configuration: AmlComputeProvisioningConfiguration
    ) -> AmlCompute:
        try:
            details = workspace._store.create_compute({"name": name, **asdict(provisioning_configuration)})
        except exceptions.UserErrorException as error:
            raise ComputeTargetException(str(error), status=error.status, code=error.code) from None
        return AmlCompute(workspace, name, _details=details)

    @staticmethod
    def attach(workspace: Any, name: str, attach_configuration: SlurmComputeAttachConfiguration) -> SlurmCompute:
        """Attach existing compute: a Slurm partition, which then runs this target's runs as Slurm jobs."""
        try:
            details = workspace._store.create_compute(
                {
                    "name": name,
                    "vm_size": attach_configuration.vm_size,
                    "provisioner": "slurm",
                    "slurm_partition": attach_configuration.partition,
                }
            )
        except exceptions.UserErrorException as error:
            raise ComputeTargetException(str(error), status=error.status, code=error.code) from None
        return SlurmCompute(workspace, name, _details=details)

    @staticmethod
    def list(workspace: Any) -> list[ComputeTarget]:
        return [_target(workspace, d) for d in workspace._store.list_computes()]

    def refresh_state(self) -> None:
        self._details = self.workspace._store.get_compute(self.name)

    @property
    def vm_size(self) -> str:
        return self._details["vm_size"]

    @property
    def provisioning_state(self) -> str:
        return self._details.get("provisioning_state", "Succeeded")

    def get_status(self) -> AmlComputeStatus:
        """The cluster's nodes now: counts by state, the size it is heading for, the allocation state."""
        self.refresh_state()
        return AmlComputeStatus(self._details)

    @property
    def status(self) -> AmlComputeStatus:
        return self.get_status()

    def list_nodes(self) -> builtins.list[dict[str, Any]]:
        """The cluster's live nodes: name, hostname, address, state, CPUs, GPUs, the run on it."""
        self.refresh_state()
        return [dict(node) for node in self._details["nodes"]]

    def update(
        self,
        min_nodes: int | None = None,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: int | None = None,
    ) -> None:
        """Change the scale settings; what is not given stays."""
        try:
            self._details = self.workspace._store.update_compute(
                self.name,
                {
                    "min_nodes": min_nodes,
                    "max_nodes": max_nodes,
                    "idle_seconds_before_scaledown": None
                    if idle_seconds_before_scaledown is None
                    else int(idle_seconds_before_scaledown),
                },
            )
        except exceptions.UserErrorException as error:
            raise ComputeTargetException(str(error), status=error.status, code=error.code) from None

    def delete(self) -> None:
        """Delete the cluster (its idle nodes stop). Refused while a node runs something, and for a
        cluster that runs were made on: their history keeps it."""
        try:
            self.workspace._store.delete_compute(self.name)
        except exceptions.UserErrorException as error:
            raise ComputeTargetException(str(error), status=error.status, code=error.code) from None

    def wait_for_completion(
        self, show_output: bool = False, min_node_count: int | None = None, timeout_in_minutes: float = 20
    ) -> None:
        """Returns once provisioning succeeded and, if asked, `min_node_count` nodes are up."""
        deadline = time.monotonic() + timeout_in_minutes * 60
        while True:
            status = self.get_status()
            if min_node_count is None or status.current_node_count >= min_node_count:
                break
            if time.monotonic() > deadline:
                raise ComputeTargetException(
                    f"Compute target {self.name!r} has {status.current_node_count} node(s) after "
                    f"{timeout_in_minutes} minutes; {min_node_count} were asked for."
                )
            if show_output:
                print(f"{self.name}: {status.current_node_count}/{min_node_count} nodes up", file=sys.stdout)
            time.sleep(1)
        if show_output:
            print(f'Provisioning operation finished, operation "{self.provisioning_state}"')

    def serialize(self) -> dict[str, Any]:
        return dict(self._details)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workspace={self.workspace.name!r}, name={self.name!r})"


class AmlCompute(ComputeTarget):
    @staticmethod
    def provisioning_configuration(
        vm_size: str = "STANDARD_D2_V2",
        vm_priority: str = "dedicated",
        min_nodes: int = 0,
        max_nodes: int | None = None,
        idle_seconds_before_scaledown: int | None = None,
        provisioner: str = "local",
        **_ignored: Any,
    ) -> AmlComputeProvisioningConfiguration:
        return AmlComputeProvisioningConfiguration(
            vm_size=vm_size,
            min_nodes=min_nodes,
            max_nodes=max_nodes if max_nodes is not None else 4,
            idle_seconds_before_scaledown=idle_seconds_before_scaledown
            if idle_seconds_before_scaledown is not None
            else 1800,
            provisioner=provisioner,
        )

    @staticmethod
    def supported_vmsizes(workspace: Any, location: str | None = None) -> list[dict[str, Any]]:
        return workspace._store.list_vm_sizes()


class SlurmCompute(ComputeTarget):
    """A compute target that is a Slurm partition: `ComputeTarget.attach(ws, name,
    SlurmCompute.attach_configuration(partition="gpu"))`."""

    @staticmethod
    def attach_configuration(partition: str, vm_size: str = "LOCAL_CPU") -> SlurmComputeAttachConfiguration:
        """`vm_size` names each host's size as the catalog does (its GPUs become `--gres=gpu:N`)."""
        return SlurmComputeAttachConfiguration(partition=partition, vm_size=vm_size)

    @property
    def partition(self) -> str:
        return self._details["slurm_partition"]


def _target(workspace: Any, details: dict[str, Any]) -> ComputeTarget:
    kind = SlurmCompute if details.get("provisioner") == "slurm" else AmlCompute
    return kind(workspace, details["name"], _details=details)

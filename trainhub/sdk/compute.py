"""`ComputeTarget` and `AmlCompute`: named clusters of nodes, as in the guide."""

from __future__ import annotations

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


class ComputeTarget:
    """`ComputeTarget(workspace=ws, name=...)` finds an existing target or raises ComputeTargetException."""

    def __init__(self, workspace: Any, name: str, _details: dict[str, Any] | None = None):
        self.workspace = workspace
        self.name = name
        if _details is None:
            try:
                _details = workspace._http.get(workspace.api(f"computes/{name}"))
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
            details = workspace._http.post(
                workspace.api("computes"), json={"name": name, **asdict(provisioning_configuration)}
            )
        except exceptions.UserErrorException as error:
            raise ComputeTargetException(str(error), status=error.status, code=error.code) from None
        return AmlCompute(workspace, name, _details=details)

    @staticmethod
    def list(workspace: Any) -> list[ComputeTarget]:
        return [AmlCompute(workspace, d["name"], _details=d) for d in workspace._http.get(workspace.api("computes"))]

    def refresh_state(self) -> None:
        self._details = self.workspace._http.get(self.workspace.api(f"computes/{self.name}"))

    @property
    def vm_size(self) -> str:
        return self._details["vm_size"]

    @property
    def provisioning_state(self) -> str:
        return self._details.get("provisioning_state", "Succeeded")

    def get_status(self) -> dict[str, Any]:
        self.refresh_state()
        nodes = self._details["nodes"]
        return {
            "provisioning_state": self.provisioning_state,
            "current_node_count": len(nodes),
            "idle_node_count": sum(1 for n in nodes if n["state"] == "idle"),
            "busy_node_count": sum(1 for n in nodes if n["state"] == "busy"),
            "nodes": nodes,
        }

    def wait_for_completion(
        self, show_output: bool = False, min_node_count: int | None = None, timeout_in_minutes: float = 20
    ) -> None:
        """Returns once provisioning succeeded and, if asked, `min_node_count` nodes are up."""
        deadline = time.monotonic() + timeout_in_minutes * 60
        while True:
            status = self.get_status()
            if min_node_count is None or status["current_node_count"] >= min_node_count:
                break
            if time.monotonic() > deadline:
                raise ComputeTargetException(
                    f"Compute target {self.name!r} has {status['current_node_count']} node(s) after "
                    f"{timeout_in_minutes} minutes; {min_node_count} were asked for."
                )
            if show_output:
                print(f"{self.name}: {status['current_node_count']}/{min_node_count} nodes up", file=sys.stdout)
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
        return workspace._http.get("vm-sizes")

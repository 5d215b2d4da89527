"""`Webservice`: a deployed model answering at its scoring URI, as the guide's
`azureml.core.webservice` names it. `AciWebservice`, `AksWebservice` and `LocalWebservice` give
deployment configurations; TrainHub serves each as an endpoint on a compute cluster (the
deployment's log says how each setting was taken). Unlike the cloud's ACI, a TrainHub endpoint
needs a key unless auth_enabled=False is said, and limits cpu_cores and memory_gb only when given."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from trainhub.sdk import exceptions
from trainhub.sdk._deployment import inference_payload

FINAL_STATES = ("Healthy", "Failed")


class WebserviceException(exceptions.TrainHubError):
    pass


class DeploymentConfiguration(dict):
    """What a deploy_configuration() gave: sent with the deployment, and shown in its log."""


class AciWebservice:
    @staticmethod
    def deploy_configuration(
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        tags: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        description: str | None = None,
        location: str | None = None,
        auth_enabled: bool | None = None,
        ssl_enabled: bool | None = None,
        enable_app_insights: bool | None = None,
        compute_target: Any = None,
        replicas: int | None = None,
        **_ignored: Any,
    ) -> DeploymentConfiguration:
        """TrainHub's own: `compute_target`, the cluster to serve on (the workspace's first when None);
        `replicas`, how many replicas serve at once (1 when None), each holding a node."""
        return DeploymentConfiguration(
            kind="aci",
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            auth_enabled=auth_enabled,
            replicas=replicas,
            tags=dict(tags or {}),
            description=description or "",
            compute_target=_target_name(compute_target),
        )


class AksWebservice:
    @staticmethod
    def deploy_configuration(
        autoscale_enabled: bool | None = None,
        autoscale_min_replicas: int | None = None,
        autoscale_max_replicas: int | None = None,
        cpu_cores: float | None = None,
        memory_gb: float | None = None,
        tags: dict[str, Any] | None = None,
        description: str | None = None,
        auth_enabled: bool | None = None,
        num_replicas: int | None = None,
        compute_target: Any = None,
        **_ignored: Any,
    ) -> DeploymentConfiguration:
        """`num_replicas` replicas (with autoscale_enabled, autoscale_min_replicas: TrainHub does not
        scale on load); `compute_target` is a TrainHub cluster, not an AKS one."""
        return DeploymentConfiguration(
            kind="aks",
            num_replicas=num_replicas,
            autoscale_enabled=bool(autoscale_enabled),
            autoscale_min_replicas=autoscale_min_replicas,
            cpu_cores=cpu_cores,
            memory_gb=memory_gb,
            auth_enabled=auth_enabled,
            tags=dict(tags or {}),
            description=description or "",
            compute_target=_target_name(compute_target),
        )


class LocalWebservice:
    @staticmethod
    def deploy_configuration(
        port: int | None = None, compute_target: Any = None, **_ignored: Any
    ) -> DeploymentConfiguration:
        return DeploymentConfiguration(kind="local", port=port, compute_target=_target_name(compute_target))


def _target_name(target: Any) -> str | None:
    if target is None:
        return None
    return target if isinstance(target, str) else target.name


class Webservice:
    """An endpoint of a workspace, found by name (or returned by Model.deploy)."""

    def __init__(self, workspace: Any, name: str, _details: dict[str, Any] | None = None, **_ignored: Any):
        self.workspace = workspace
        self.name = name
        self._details = _details if _details is not None else self._refresh()

    # ------------------------------------------------------------ reading

    def _refresh(self) -> dict[str, Any]:
        try:
            self._details = self.workspace._store.get_endpoint(self.name)
        except exceptions.NotFoundError as error:
            raise WebserviceException(str(error), status=404, code="not_found") from None
        return self._details

    @property
    def state(self) -> str:
        return self._refresh()["state"]

    @property
    def error(self) -> str:
        return self._refresh()["error"]

    @property
    def scoring_uri(self) -> str:
        return self.workspace.url + self._details["scoring_path"]

    @property
    def swagger_uri(self) -> None:
        return None

    @property
    def compute_type(self) -> str:
        return {"aci": "ACI", "local": "Local"}.get(self._details["deployment_config"].get("kind", ""), "TrainHub")

    @property
    def models(self) -> list[str]:
        return list(self._refresh()["models"])

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._details["tags"])

    @property
    def description(self) -> str:
        return self._details["description"]

    def get_details(self) -> dict[str, Any]:
        return self._refresh()

    def serialize(self) -> dict[str, Any]:
        details = self._refresh()
        return {
            "name": self.name,
            "state": details["state"],
            "scoringUri": self.scoring_uri,
            "computeType": self.compute_type,
            "models": details["models"],
            "replicas": details["replicas"],
        }

    def get_portal_url(self) -> str:
        return self.workspace.url + self._details["portal_url"]

    # ------------------------------------------------------------ waiting and logs

    def _log_lines(self, after: int) -> tuple[list[str], int, str]:
        answer = self.workspace._store.get_endpoint_logs(self.name, after)
        lines: list[str] = []
        for chunk in answer["chunks"]:
            lines += chunk["lines"]
            after = max(after, chunk["first_seq"] + len(chunk["lines"]) - 1)
        return lines, after, answer["status"]

    def wait_for_deployment(self, show_output: bool = False, timeout_sec: float | None = None) -> None:
        """Until the endpoint answers (Healthy) or its deployment failed; with `show_output`, the
        replica's log as it comes. A failed deployment raises WebserviceException with its reason."""
        deadline = None if timeout_sec is None else time.monotonic() + timeout_sec
        after = 0
        while True:
            details = self._refresh()
            if show_output:
                lines, after, _ = self._log_lines(after)
                for line in lines:
                    print(line)
            if details["state"] in FINAL_STATES:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise WebserviceException(f"Endpoint {self.name} is still {details['state']} after {timeout_sec} s.")
            time.sleep(0.3)
        if show_output:
            print(details["state"])
            print(f'{self.compute_type} service creation operation finished, operation "{details["state"]}"')
        sys.stdout.flush()
        if details["state"] == "Failed":
            raise WebserviceException(
                f"Endpoint {self.name} failed to deploy: {details['error']}\n"
                f"Its log: service.get_logs(), or {self.get_portal_url()}"
            )

    def get_logs(self, num_lines: int = 5000, init: bool = False) -> str:
        lines, _, _ = self._log_lines(0)
        return "\n".join(lines[-num_lines:])

    # ------------------------------------------------------------ keys and scoring

    def get_keys(self) -> tuple[str, str]:
        """(primary key, secondary key): for the workspace's contributors and owners."""
        try:
            keys = self.workspace._store.get_endpoint_keys(self.name)
        except exceptions.TrainHubError as error:
            raise WebserviceException(str(error), status=error.status, code=error.code) from None
        return keys["primary"], keys["secondary"]

    def regen_key(self, key: str | None = None, set_key: str | None = None, key_type: str | None = None) -> str:
        """A new 'Primary' or 'Secondary' key (`key` or `key_type`); the old one stops working at once."""
        which = key_type or key
        if which is None or which.lower() not in ("primary", "secondary"):
            raise WebserviceException("regen_key takes key_type='Primary' or 'Secondary'.")
        answer = self.workspace._store.regenerate_endpoint_key(self.name, which)
        return answer["key"]

    def run(self, input_data: Any) -> Any:
        """POST input_data (a JSON string, or anything JSON holds) to the scoring URI with your token;
        the replica's answer, decoded from JSON."""
        body = input_data if isinstance(input_data, (str, bytes)) else json.dumps(input_data)
        if isinstance(body, str):
            body = body.encode()
        try:
            status, content = self.workspace._store.score(self.scoring_uri, body)
        except Exception as error:
            raise exceptions.ServerUnreachableError(f"Cannot reach {self.scoring_uri}: {error}") from None
        try:
            answer = json.loads(content)
        except ValueError:
            answer = content.decode(errors="replace")
        if status >= 400:
            detail = answer.get("detail") if isinstance(answer, dict) else answer
            raise WebserviceException(f"Received bad response from service ({status}): {detail}", status=status)
        return answer

    # ------------------------------------------------------------ changing

    def update(
        self,
        models: list[Any] | None = None,
        inference_config: Any = None,
        **_ignored: Any,
    ) -> None:
        """Serve other model versions, or another script or environment: a new replica starts beside
        the serving one and takes over once it answers (wait_for_deployment() waits for that)."""
        details = self._refresh()
        if models is None:
            refs = [{"name": m.rpartition(":")[0], "version": int(m.rpartition(":")[2])} for m in details["models"]]
        else:
            refs = [{"name": m.name, "version": m.version} for m in models]
        if inference_config is None:
            payload = {
                "entry_script": details["entry_script"] or None,
                "snapshot": details["snapshot"] if details["entry_script"] else None,
                "environment": details["environment"],
            }
        else:
            payload = inference_payload(inference_config, self.workspace)
        self._details = self.workspace._store.update_endpoint(self.name, dict(payload, models=refs))

    def delete(self) -> None:
        self.workspace._store.delete_endpoint(self.name)

    @staticmethod
    def list(workspace: Any, compute_type: str | None = None, **_ignored: Any) -> list[Webservice]:
        found = [Webservice(workspace, d["name"], _details=d) for d in workspace._store.list_endpoints()]
        return [w for w in found if compute_type in (None, w.compute_type)]

    def __repr__(self) -> str:
        return f"Webservice(workspace={self.workspace.name!r}, name={self.name!r}, state={self._details['state']!r})"

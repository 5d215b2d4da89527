"""The live metrics of a run: members get every batch stored after they connected.

What was stored before comes from the chart endpoint; a client reads it after the socket
opened and drops live points below the count it got there (points carry their position).
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from metrics.broadcast import metrics_group
from runs.models import Run
from trainhub.workspaces.models import Membership


class RunMetricsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        run = await self._run_for(user, self.scope["url_route"]["kwargs"]["run_id"])
        if run is None:
            await self.close(code=4404)
            return
        self.group = metrics_group(run.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "subscribed", "status": run.status})

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    @database_sync_to_async
    def _run_for(self, user, run_id: str) -> Run | None:
        run = Run.objects.filter(run_id=run_id).first()
        if (
            run is None
            or not Membership.objects.filter(workspace_id=run.workspace_id, user=user).exists()
        ):
            return None
        return run

    async def metrics_batch(self, event: dict) -> None:
        await self.send_json({"type": "batch", **event["batch"]})

"""The live log stream of a run: replay what is stored after the client's sequence number, then follow."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from runs.broadcast import run_group
from runs.models import LogChunk, Run
from trainhub.workspaces.models import Membership

REPLAY_BATCH = 200


class RunLogConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.run = await self._run_for(user, self.scope["url_route"]["kwargs"]["run_id"])
        if self.run is None:
            await self.close(code=4404)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = int(query.get("after", ["0"])[0])
        except ValueError:
            after = 0
        self.group = run_group(self.run.pk)
        # Join before replaying: a batch stored during the replay then arrives live too, and
        # the client drops what it already has by sequence number.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "status", "status": self.run.status, "reason": self.run.status_reason})
        await self._replay(after)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Clients only listen."""

    @database_sync_to_async
    def _run_for(self, user, run_id: str) -> Run | None:
        run = Run.objects.filter(run_id=run_id).first()
        if run is None or not Membership.objects.filter(workspace_id=run.workspace_id, user=user).exists():
            return None
        return run

    @database_sync_to_async
    def _chunks_after(self, after: int) -> list[dict]:
        from django.db.models import F

        chunks = (
            LogChunk.objects.filter(run_id=self.run.pk)
            .annotate(last_seq=F("first_seq") + F("line_count") - 1)
            .filter(last_seq__gt=after)
            .order_by("first_seq")[:REPLAY_BATCH]
        )
        return [
            {"stream": c.stream, "first_seq": c.first_seq, "lines": c.text.split("\n"), "last_seq": c.last_seq}
            for c in chunks
        ]

    async def _replay(self, after: int) -> None:
        while True:
            chunks = await self._chunks_after(after)
            for chunk in chunks:
                last = chunk.pop("last_seq")
                await self.send_json({"type": "lines", **chunk})
                after = max(after, last)
            if len(chunks) < REPLAY_BATCH:
                break
        await self.send_json({"type": "replayed"})

    async def log_lines(self, event: dict) -> None:
        await self.send_json(
            {"type": "lines", "stream": event["stream"], "first_seq": event["first_seq"], "lines": event["lines"]}
        )

    async def run_status(self, event: dict) -> None:
        await self.send_json({k: v for k, v in event.items() if k != "type"} | {"type": "status"})

"""The live log stream of a run: replay what is stored after the client's sequence number, then follow."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from runs import selectors
from runs.broadcast import run_group
from runs.models import Run
from trainhub.workspaces.models import Membership

REPLAY_LINES = 5000


class MemberRunConsumer(AsyncJsonWebsocketConsumer):
    """A socket that follows one run's group, open to members of the run's workspace only."""

    @staticmethod
    def group_of(run_pk: int) -> str:
        raise NotImplementedError

    async def join_run(self) -> Run | None:
        """Accept a member and join the run's group; close for anyone else (4401, 4404)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return None
        run = await self._run_for(user, self.scope["url_route"]["kwargs"]["run_id"])
        if run is None:
            await self.close(code=4404)
            return None
        self.group = self.group_of(run.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        return run

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


class RunLogConsumer(MemberRunConsumer):
    group_of = staticmethod(run_group)

    async def connect(self) -> None:
        # Join before replaying: a batch stored during the replay then arrives live too, and
        # the client drops what it already has by sequence number.
        self.run = await self.join_run()
        if self.run is None:
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            after = int(query.get("after", ["0"])[0])
        except ValueError:
            after = 0
        await self.send_json({"type": "status", "status": self.run.status, "reason": self.run.status_reason})
        await self._replay(after)

    async def _replay(self, after: int) -> None:
        while chunks := await database_sync_to_async(selectors.log_chunks_after)(
            self.run, after, max_lines=REPLAY_LINES
        ):
            for chunk in chunks:
                await self.send_json({"type": "lines", **chunk.as_message()})
                after = max(after, chunk.first_seq + chunk.line_count - 1)
        await self.send_json({"type": "replayed"})

    async def log_lines(self, event: dict) -> None:
        await self.send_json(
            {"type": "lines", "stream": event["stream"], "first_seq": event["first_seq"], "lines": event["lines"]}
        )

    async def run_status(self, event: dict) -> None:
        await self.send_json({k: v for k, v in event.items() if k != "type"} | {"type": "status"})

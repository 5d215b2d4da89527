"""The live log stream of a run: replay what is stored after the client's sequence number, then follow."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from runs import selectors
from runs.models import Run
from trainhub import live
from trainhub.live.hub import Event
from trainhub.live.sockets import LiveSocket

REPLAY_LINES = 5000


class RunLogConsumer(LiveSocket):
    def find(self, user: Any) -> tuple[Run, int, str] | None:
        run = selectors.run_for_member(user, self.scope["url_route"]["kwargs"]["run_id"])
        return None if run is None else (run, run.workspace_id, live.run_logs_group(run.pk))

    async def connect(self) -> None:
        # Join before replaying: a batch stored during the replay then arrives live too, and
        # the client drops what it already has by sequence number.
        self.run = await self.open_for_member()
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
        while not self._resyncing and (
            chunks := await database_sync_to_async(selectors.log_chunks_after)(self.run, after, max_lines=REPLAY_LINES)
        ):
            for chunk in chunks:
                await self.send_json({"type": "lines", **chunk.as_message()})
                after = max(after, chunk.first_seq + chunk.line_count - 1)
        await self.send_json({"type": "replayed"})

    async def log_lines(self, event: Event) -> None:
        await self.send(text_data=event.text(_lines_message))

    async def run_status(self, event: Event) -> None:
        await self.send(text_data=event.text(_status_message))


def _lines_message(event: Event) -> dict[str, Any]:
    return {"type": "lines", "stream": event["stream"], "first_seq": event["first_seq"], "lines": event["lines"]}


def _status_message(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"} | {"type": "status"}

"""The live metrics of a run: members get every batch stored after they connected.

What was stored before comes from the chart endpoint; a client reads it after the socket
opened and drops live points below the count it got there (points carry their position).
"""

from __future__ import annotations

from typing import Any

from runs.models import Run
from runs.selectors import run_for_member
from trainhub import live
from trainhub.live.hub import Event
from trainhub.live.sockets import LiveSocket


class RunMetricsConsumer(LiveSocket):
    def find(self, user: Any) -> tuple[Run, int, str] | None:
        run = run_for_member(user, self.scope["url_route"]["kwargs"]["run_id"])
        return None if run is None else (run, run.workspace_id, live.run_metrics_group(run.pk))

    async def connect(self) -> None:
        run = await self.open_for_member()
        if run is not None:
            await self.send_json({"type": "subscribed", "status": run.status})

    async def metrics_batch(self, event: Event) -> None:
        await self.send(text_data=event.text(_batch_message))


def _batch_message(event: Event) -> dict[str, Any]:
    return {"type": "batch", **event["batch"]}

"""The live metrics of a run: members get every batch stored after they connected.

What was stored before comes from the chart endpoint; a client reads it after the socket
opened and drops live points below the count it got there (points carry their position).
"""

from __future__ import annotations

from typing import Any

from metrics.broadcast import metrics_group
from runs.consumers import MemberRunConsumer
from runs.live import Event


class RunMetricsConsumer(MemberRunConsumer):
    group_of = staticmethod(metrics_group)

    async def connect(self) -> None:
        run = await self.join_run()
        if run is not None:
            await self.send_json({"type": "subscribed", "status": run.status})

    async def metrics_batch(self, event: Event) -> None:
        await self.send(text_data=event.text(_batch_message))


def _batch_message(event: Event) -> dict[str, Any]:
    return {"type": "batch", **event["batch"]}

"""The live log stream of a run: replay what is stored after the client's sequence number, then follow."""

from __future__ import annotations

import bisect
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
        # The ranges of sequence numbers replayed, first and last (in order, apart; chunks that
        # follow one another make one range, so a long replay keeps a few): a live event may hold
        # some of them too, merged by the hub with lines after them (log_lines).
        self._replayed_firsts: list[int] = []
        self._replayed_lasts: list[int] = []
        while not self._resyncing and (
            chunks := await database_sync_to_async(selectors.log_chunks_after)(self.run, after, max_lines=REPLAY_LINES)
        ):
            for chunk in chunks:
                await self.send_json({"type": "lines", **chunk.as_message()})
                last = chunk.first_seq + chunk.line_count - 1
                after = max(after, last)
                if self._replayed_lasts and chunk.first_seq == self._replayed_lasts[-1] + 1:
                    self._replayed_lasts[-1] = last
                else:
                    self._replayed_firsts.append(chunk.first_seq)
                    self._replayed_lasts.append(last)
        await self.send_json({"type": "replayed"})

    async def log_lines(self, event: Event) -> None:
        """A live batch; of one that holds replayed lines, only the others. A page knows a batch by
        its first line: a batch stored before the replay and published after the join, merged by
        the hub with the next one, came again under a number the page had, and the page dropped the
        lines after it with it."""
        first, lines = event["first_seq"], event["lines"]
        pieces = self._not_replayed(first, len(lines))
        if pieces is None:
            await self.send(text_data=event.text(_lines_message))
            return
        for start, stop in pieces:
            message = _lines_message(event) | {"first_seq": first + start, "lines": lines[start:stop]}
            await self.send_json(message)

    def _not_replayed(self, first: int, count: int) -> list[tuple[int, int]] | None:
        """The (start, stop) offsets of the lines of a batch numbered from `first` that the replay
        did not send; None when it sent none of them."""
        last = first + count - 1
        index = bisect.bisect_left(self._replayed_lasts, first)
        if index == len(self._replayed_firsts) or self._replayed_firsts[index] > last:
            return None
        pieces, cursor = [], first
        while index < len(self._replayed_firsts) and self._replayed_firsts[index] <= last:
            if self._replayed_firsts[index] > cursor:
                pieces.append((cursor - first, self._replayed_firsts[index] - first))
            cursor = max(cursor, self._replayed_lasts[index] + 1)
            index += 1
        if cursor <= last:
            pieces.append((cursor - first, count))
        return pieces

    async def run_status(self, event: Event) -> None:
        await self.send(text_data=event.text(_status_message))


def _lines_message(event: Event) -> dict[str, Any]:
    return {"type": "lines", "stream": event["stream"], "first_seq": event["first_seq"], "lines": event["lines"]}


def _status_message(event: Event) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"} | {"type": "status"}

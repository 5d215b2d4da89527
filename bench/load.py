"""Load figures: many live-log viewers of one loud run, and many clients submitting and registering at once.

Prints, for 200 WebSocket viewers of a run printing 1,000 lines/s for 30 s, how many viewers got
every line in order and the line latency (p50/p95); for 50 submits from 10 clients, the submit
latency, the time until all ran, and any run or version number given twice. The viewers are
spread over a few client processes (`--client-processes`), so that the client keeps up.
Smaller runs for a quick look: `python bench/load.py --viewers 20 --seconds 5 --submits 10`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from array import array
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from _harness import PASSWORD, PRINTER, Harness, login_cookie, percentile, submit


class Viewer:
    """One browser-like socket: checks that lines arrive contiguous and in order, times them."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.next_line = 0
        self.in_order = True
        self.latencies: list[float] = []
        self.reconnects = 0
        self.close_codes: Counter = Counter()
        self.gaps = 0

    def take(self, message: dict) -> None:
        if message.get("type") != "lines":
            return
        first, lines = message["first_seq"], message["lines"]
        if first + len(lines) <= self.next_seq:
            return  # replayed and live at once: already seen
        if first > self.next_seq:
            self.in_order = False
            self.gaps += 1  # lines this viewer will never get on this socket
        arrived = time.time()
        for line in lines[self.next_seq - first :] if first < self.next_seq else lines:
            if line.startswith("L "):
                _, number, stamp = line.split()
                self.in_order &= int(number) == self.next_line
                self.next_line = int(number) + 1
                self.latencies.append(arrived - float(stamp))
        self.next_seq = first + len(lines)


async def watch(url: str, cookie: str, origin: str, viewer: Viewer, expected: int, deadline: float) -> None:
    """Follow the run as the page does: on a closed socket, reconnect from the last line seen."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, WebSocketException

    while viewer.next_line < expected and time.time() < deadline:
        try:
            # A browser waits for a busy server far longer than the 10 s websockets gives it.
            async with connect(
                f"{url}?after={viewer.next_seq - 1}",
                max_size=None,
                open_timeout=60,
                additional_headers={"Cookie": cookie, "Origin": origin},
            ) as socket:
                while viewer.next_line < expected:
                    raw = await asyncio.wait_for(socket.recv(), timeout=max(0.1, deadline - time.time()))
                    viewer.take(json.loads(raw))
        except TimeoutError:
            return
        except ConnectionClosed as closed:  # closed by the server, e.g. 4429: fell behind, replay
            viewer.reconnects += 1
            viewer.close_codes[closed.rcvd.code if closed.rcvd else 1006] += 1
            await asyncio.sleep(0.5)
        except (WebSocketException, OSError):  # a handshake the busy server dropped
            viewer.reconnects += 1
            viewer.close_codes["handshake"] += 1
            await asyncio.sleep(0.5)


def watch_share(url: str, cookie: str, origin: str, count: int, expected: int, deadline: float) -> list[tuple]:
    """`count` viewers in this process; what each got, small enough to send back to the bench."""
    viewers = [Viewer() for _ in range(count)]

    async def all_of_them() -> None:
        await asyncio.gather(*(watch(url, cookie, origin, v, expected, deadline) for v in viewers))

    asyncio.run(all_of_them())
    return [
        (v.in_order, v.next_line, v.gaps, v.reconnects, dict(v.close_codes), array("f", v.latencies)) for v in viewers
    ]


def many_viewers(ws, folder: Path, server, viewers: int, seconds: int, processes: int) -> None:
    from runs.models import Run
    from tests.helpers.processes import run_folder

    rate = 1000
    expected = rate * seconds
    run = submit(ws, folder, "printer.py", [rate, seconds, "go"])
    # The printer waits for its go file, so every viewer is connected before the first line; the
    # run's folder is the one folder both the bench and the boxed printer see.
    while not Run.objects.filter(run_id=run.id, status="Running").exists():
        time.sleep(0.2)
    go = run_folder(run.id) / "go"
    cookie = login_cookie(server, "bench", PASSWORD)
    url = f"ws://127.0.0.1:{server.port}/ws/runs/{run.id}/logs/"
    deadline = time.time() + seconds + 120
    # Viewers spread over client processes: 200 sockets reading 1,000 lines/s each keep one Python
    # process (one core, at best) busy, and the bench would measure itself rather than the server.
    shares = [viewers // processes + (1 if i < viewers % processes else 0) for i in range(processes)]
    # Forked: the children only run sockets (nothing of Django), and see this module as it is.
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(watch_share, url, cookie, server.url, n, expected, deadline) for n in shares if n]
        time.sleep(min(10, 1 + viewers / 20))  # connections open
        go.touch()
        watchers = [v for future in futures for v in future.result()]
    run.wait_for_completion()
    complete = sum(1 for in_order, got, *_ in watchers if in_order and got == expected)
    latencies = [x for *_, lat in watchers for x in lat] or [float("nan")]
    close_codes: Counter = Counter()
    for *_, codes, _lat in watchers:
        close_codes.update(codes)
    errors = [line for line in server.log().splitlines() if line and not line[0].isspace() and "Error" in line]
    causes = f" (server errors: {Counter(errors).most_common(2)})" if errors else ""
    print(
        f"{viewers} viewers of one run printing {rate:,} lines/s for {seconds} s ({processes} client processes): "
        f"{complete}/{viewers} got all {expected:,} lines in order; latency p50 "
        f"{percentile(latencies, 0.5) * 1000:.0f} ms, p95 {percentile(latencies, 0.95) * 1000:.0f} ms; "
        f"viewers that missed lines (a gap in the sequence): {sum(1 for w in watchers if w[2])}, "
        f"still behind at the end: {sum(1 for w in watchers if not w[2] and w[1] < expected)}; "
        f"sockets closed by the server and reopened: {sum(w[3] for w in watchers)} "
        f"({dict(close_codes) or 'none'}){causes}"
    )


def many_submits(ws, folder: Path, submits: int, clients: int) -> None:
    from registry.models import ModelVersion
    from runs.models import Run

    (folder / "model.py").write_text("import os\nos.makedirs('outputs', exist_ok=True)\nopen('outputs/m.pt','w')\n")
    timings: list[float] = []

    def one(_: int):
        started = time.perf_counter()
        run = submit(ws, folder, "model.py", experiment="load")
        timings.append(time.perf_counter() - started)
        return run

    started = time.time()
    with ThreadPoolExecutor(clients) as pool:
        runs = list(pool.map(one, range(submits)))
    statuses = Counter(run.wait_for_completion(raise_on_error=False)["status"] for run in runs)
    ran = time.time() - started
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda run: run.register_model("load-model", "outputs/m.pt"), runs))
    numbers = Counter(Run.objects.filter(experiment__name="load").values_list("number", flat=True))
    versions = Counter(ModelVersion.objects.filter(model__name="load-model").values_list("version", flat=True))
    print(
        f"{submits} submits from {clients} clients: submit p50 {percentile(timings, 0.5) * 1000:.0f} ms, "
        f"p95 {percentile(timings, 0.95) * 1000:.0f} ms; all ended in {ran:.1f} s ({dict(statuses)}); "
        f"run numbers given twice: {sum(1 for c in numbers.values() if c > 1)}, "
        f"version numbers given twice: {sum(1 for c in versions.values() if c > 1)} "
        f"({len(versions)} versions registered concurrently)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=200)
    parser.add_argument("--client-processes", type=int, default=4, help="processes the viewers are spread over")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--submits", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    with Harness() as harness:
        server, ws = harness.sdk_workspace(nodes=2)
        folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
        (folder / "printer.py").write_text(PRINTER)
        many_viewers(ws, folder, server, args.viewers, args.seconds, args.client_processes)
        if args.submits:
            many_submits(ws, folder, args.submits, args.clients)


if __name__ == "__main__":
    sys.exit(main())

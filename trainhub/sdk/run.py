"""`Run`: a submitted run seen from outside (status, logs, files), and — through
`Run.get_context()` — the current run seen from inside a training script.

Standard library only at import time: training scripts import this in environments that
have nothing of TrainHub but this package.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from trainhub.sdk._run_context import current_run
from trainhub.sdk._run_metrics import RunMetricsMixin
from trainhub.sdk._run_registry import RunRegistryMixin
from trainhub.sdk.environment import Environment
from trainhub.sdk.exceptions import RunFailedError, TrainHubError

FINAL_STATUSES = ("Completed", "Failed", "Canceled")
# How long one request following a run may wait on the server for its next lines or its end.
LOG_WAIT_SECONDS = 20.0


class Run(RunMetricsMixin, RunRegistryMixin):
    def __init__(self, experiment: Any, run_id: str, _details: dict[str, Any] | None = None):
        self.experiment = experiment
        self.id = run_id
        self._details = _details

    # ------------------------------------------------------------ inside a run

    @classmethod
    def get_context(cls, allow_offline: bool = True) -> Any:
        return current_run(cls, allow_offline=allow_offline)

    # ------------------------------------------------------------ outside

    @property
    def _ws(self) -> Any:
        return self.experiment.workspace

    def _refresh(self) -> dict[str, Any]:
        self._details = self._ws._store.get_run(self.id)
        return self._details

    @property
    def number(self) -> int:
        return (self._details or self._refresh())["number"]

    @property
    def display_name(self) -> str:
        return (self._details or self._refresh())["display_name"]

    @display_name.setter
    def display_name(self, value: str) -> None:
        self._details = self._ws._store.update_run(self.id, {"display_name": str(value)})

    @property
    def description(self) -> str:
        return (self._details or self._refresh())["description"]

    @description.setter
    def description(self, value: str) -> None:
        self._details = self._ws._store.update_run(self.id, {"description": str(value)})

    @property
    def status(self) -> str:
        return self.get_status()

    def get_status(self) -> str:
        return self._refresh()["status"]

    def get_details(self) -> dict[str, Any]:
        return _described(self._refresh())

    def get_environment(self) -> Any:
        """The environment version the run ran in."""
        environment = (self._details or self._refresh())["environment"]
        return Environment.get(self._ws, environment["name"], version=environment["version"])

    def get_portal_url(self) -> str:
        return self._ws.url + (self._details or self._refresh())["portal_url"]

    def cancel(self) -> None:
        self._details = self._ws._store.cancel_run(self.id)

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        if show_output:
            for line in self.iter_log(follow=True):
                print(line)
            sys.stdout.flush()
            details = self.get_details()
        else:
            # Each request waits on the server until the run ends (or LOG_WAIT_SECONDS pass).
            while (run := self._ws._store.get_run(self.id, wait=LOG_WAIT_SECONDS))["status"] not in FINAL_STATUSES:
                pass
            self._details = run
            details = _described(run)
        if show_output:
            print("\nExecution Summary\n=================")
            print(f"RunId: {self.id}\nStatus: {details['status']}\nWeb View: {self.get_portal_url()}")
        if details["status"] == "Failed" and raise_on_error:
            raise RunFailedError(
                f"Run {self.id} failed: {details['status_reason']}\n{details['error_traceback']}".rstrip()
            )
        return details

    def iter_log(self, follow: bool = False) -> Iterator[str]:
        """The run's log lines in order; with `follow`, also those still to come, until the run ends.

        Following, each request waits on the server until the run prints or changes status (a long
        poll), so the end of the run is seen as it happens. Lines of a run with several processes
        are prefixed with their stream ([std_log_process_1]).
        """
        seen: set[int] = set()
        contiguous = 0
        known = 0  # the last line number got, past any hole in the numbering
        spans: dict[int, int] = {}
        streams_seen: set[str] = set()
        wait = LOG_WAIT_SECONDS if follow else None
        while True:
            answer = self._ws._store.get_run_logs(self.id, contiguous, wait=wait, known=known)
            fresh = False
            for chunk in answer["chunks"]:
                if chunk["first_seq"] in seen:
                    continue
                fresh = True
                seen.add(chunk["first_seq"])
                spans[chunk["first_seq"]] = len(chunk["lines"])
                known = max(known, chunk["first_seq"] + len(chunk["lines"]) - 1)
                streams_seen.add(chunk["stream"])
                prefix = f"[{chunk['stream']}] " if len(streams_seen) > 2 else ""
                for line in chunk["lines"]:
                    yield prefix + line
            while contiguous + 1 in spans:
                contiguous += spans.pop(contiguous + 1)
            if answer.get("complete"):
                return  # the run has ended and this was the rest of its log
            # Nothing new (a hole in the numbering keeps handing back lines already seen) ends a
            # finished run's log: the status was read before its lines, so all of them are here.
            if not fresh and (not follow or answer["status"] in FINAL_STATUSES):
                return

    def get_file_names(self) -> list[str]:
        return [f["path"] for f in self._ws._store.list_run_files(self.id)]

    def download_file(self, name: str, output_file_path: str | None = None, _validate_checksum: bool = True) -> str:
        target = output_file_path or os.path.basename(name)
        if os.path.isdir(target):
            target = os.path.join(target, os.path.basename(name))
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        response = self._ws._store.open_run_file(self.id, name)
        expected = response.headers.get("X-Checksum-Sha256")
        digest = hashlib.sha256()
        partial = target + ".part"
        with response, open(partial, "wb") as handle:
            for chunk in response.iter_content(chunk_size=4 << 20):
                digest.update(chunk)
                handle.write(chunk)
        if _validate_checksum and expected and digest.hexdigest() != expected:
            os.unlink(partial)
            raise TrainHubError(f"The download of {name} was damaged (checksum mismatch); try again.")
        os.replace(partial, target)
        return target

    def download_files(
        self,
        prefix: str | None = None,
        output_directory: str | None = None,
        output_paths: list[str] | None = None,
        append_prefix: bool = True,
    ) -> list[str]:
        output_directory = output_directory or "."
        done = []
        for name in self.get_file_names():
            if prefix and not name.startswith(prefix):
                continue
            relative = name if append_prefix or not prefix else name[len(prefix) :].lstrip("/")
            done.append(self.download_file(name, os.path.join(output_directory, relative)))
        return done

    def __repr__(self) -> str:
        return f"Run(experiment={getattr(self.experiment, 'name', None)!r}, id={self.id!r})"


def _described(details: dict[str, Any]) -> dict[str, Any]:
    """A run's details with the names the guide's SDK gives them too."""
    return dict(
        details,
        runId=details["run_id"],
        target=details["compute_target"],
        startTimeUtc=details["started_at"],
        endTimeUtc=details["ended_at"],
        error={"message": details["status_reason"], "traceback": details["error_traceback"]}
        if details["status"] == "Failed"
        else None,
    )

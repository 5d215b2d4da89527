"""The SDK's one HTTP choke point: token, timeouts, retries with backoff, typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from trainhub.sdk import exceptions

DEFAULT_TIMEOUT = (5.0, 60.0)
USER_AGENT = "trainhub-sdk/0.1"


class HttpClient:
    def __init__(self, base_url: str, token: str | None, *, timeout: Any = DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(
            total=5,
            connect=3,
            read=2,
            status=5,
            backoff_factor=0.3,
            status_forcelist=(429, 502, 503, 504),
            # A 429/502/503/504 means the request was not processed, so a POST is safe to repeat.
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=8)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, self.url(path), **kwargs)
        except requests.exceptions.ConnectionError as error:
            raise exceptions.ServerUnreachableError(
                f"Cannot reach the TrainHub server at {self.base_url}: is it running, and is the "
                f"URL right? ({type(error).__name__})"
            ) from None
        except requests.exceptions.Timeout:
            raise exceptions.ServerUnreachableError(
                f"The TrainHub server at {self.base_url} did not answer in time."
            ) from None
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=json, **kwargs)
        return response.json() if response.content else None

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = self.request("PATCH", path, json=json, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str, **kwargs: Any) -> None:
        self.request("DELETE", path, **kwargs)

    def stream(self, path: str, **kwargs: Any) -> Iterator[bytes]:
        response = self.request("GET", path, stream=True, **kwargs)
        with response:
            yield from response.iter_content(chunk_size=1 << 20)


def error_from_response(response: requests.Response) -> exceptions.TrainHubError:
    return exceptions.from_answer(response.status_code, response.content, response.reason or "")

"""The server a suite runs against: a container, a local process, or a URL.

All three answer the same questions (``ws_url``, ``http_url``, ``host``,
``port``, ``get()``, ``status()``, ``log_text()``); ``controllable`` says
whether a test may stop, restart or kill it (not a deployment behind a URL).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

TARGETS = ("container", "local", "url")


class UrlServer:
    """An existing deployment, for pre-release validation. Not controllable."""

    controllable = False

    def __init__(self, url: str, api_key: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"--earshot-url must be ws://HOST:PORT or wss://..., not {url!r}")
        self.ws_url = url.rstrip("/")
        self.http_url = ("https" if parts.scheme == "wss" else "http") + self.ws_url[
            len(parts.scheme):]
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "wss" else 80)
        self.api_key = api_key

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        request = urllib.request.Request(self.http_url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        code, body = self.get("/status")
        if code != 200:
            raise RuntimeError(f"/status answered {code}: {body[:200]!r}")
        return json.loads(body)

    def log_text(self) -> str:
        return ""  # a deployment's logs are not ours to read


@contextmanager
def open_target(
    kind: str,
    *,
    url: str | None = None,
    model: str | None = None,
    device: str | None = None,
    api_key: str | None = None,
) -> Iterator[Any]:
    """Start (or reach) the server, yield it, stop it on every path."""
    if kind == "url":
        if not url:
            raise ValueError("--earshot-target url needs --earshot-url ws://HOST:PORT")
        yield UrlServer(url, api_key)
    elif kind == "local":
        from earshot.testing.local import LocalServer

        flags = [f"--{name}={value}" for name, value in
                 (("model", model), ("device", device), ("api-key", api_key)) if value]
        with LocalServer(*flags, "--max-clients", "16") as server:
            yield server
    elif kind == "container":
        from earshot.testing.container import WhisperLiveContainer

        with WhisperLiveContainer(model=model, device=device, api_key=api_key, max_clients=16,
                                  gpu=device == "cuda") as server:
            yield server
    else:
        raise ValueError(f"unknown target {kind!r}; use {', '.join(TARGETS)}")

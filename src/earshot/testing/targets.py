"""The server a suite runs against: a container, a local process, or a URL.

All three answer the same questions (``ws_url``, ``http_url``, ``host``,
``port``, ``get()``, ``status()``, ``log_text()``); ``controllable`` says
whether a test may stop, restart or kill it (not a deployment behind a URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from earshot.testing.http import HttpEndpoints

TARGETS = ("container", "local", "url")


class UrlServer(HttpEndpoints):
    """An existing deployment, for pre-release validation. Not controllable."""

    controllable = False

    def __init__(self, url: str, api_key: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"--earshot-url must be ws://HOST:PORT or wss://..., not {url!r}")
        self._ws_url = url.rstrip("/")
        self._http_url = ("https" if parts.scheme == "wss" else "http") + self._ws_url[
            len(parts.scheme):]
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "wss" else 80)
        self.api_key = api_key

    @property
    def ws_url(self) -> str:  # kept as given: the scheme may be wss, the path set
        return self._ws_url

    @property
    def http_url(self) -> str:
        return self._http_url

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

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

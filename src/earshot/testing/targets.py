"""The server a suite runs against: a container, a local process, or a URL.

All three answer the same questions (``ws_url``, ``http_url``, ``host``,
``port``, ``api_key``, ``get()``, ``server_status()``, ``log_text()``);
``controllable`` says whether a test may stop, restart, pause or kill it (not
a deployment behind a URL).

Server settings are given once, by the server's own option names
(``max_clients=1``, ``ping_interval=1``): a container gets them as
``EARSHOT_*`` variables, a local process as ``--*`` flags. A URL target is
whatever the deployment was started with, so it takes none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from earshot.testing.http import HttpEndpoints

TARGETS = ("container", "local", "url")


def as_flags(settings: Mapping[str, object]) -> list[str]:
    """``{"max_clients": 1}`` -> ``["--max-clients=1"]`` (None values left out)."""
    return [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()
            if value is not None]


def as_env(settings: Mapping[str, object]) -> dict[str, str]:
    """``{"max_clients": 1}`` -> ``{"EARSHOT_MAX_CLIENTS": "1"}`` (None values left out)."""
    return {f"EARSHOT_{name.upper()}": str(value) for name, value in settings.items()
            if value is not None}


class UrlServer(HttpEndpoints):
    """An existing deployment, for pre-release validation. Not controllable, and
    shared: others' sessions may come and go on it, so a run counts only its own."""

    controllable = False
    shared = True

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

    def log_text(self) -> str:
        return ""  # a deployment's logs are not ours to read


@contextmanager
def open_target(
    kind: str,
    *,
    url: str | None = None,
    api_key: str | None = None,
    image: str | None = None,
    **settings: object,
) -> Iterator[Any]:
    """Start (or reach) the server, yield it, stop it on every path.

    ``settings`` are server options by name; ``device="cuda"`` also gives a
    container the GPU. A URL target refuses settings (it cannot apply them).
    """
    if kind == "url":
        if not url:
            raise ValueError("--earshot-target url needs --earshot-url ws://HOST:PORT")
        wanted = {k: v for k, v in settings.items() if v is not None}
        if wanted:
            raise ValueError(f"the url target cannot apply server settings {wanted}")
        yield UrlServer(url, api_key)
    elif kind == "local":
        from earshot.testing.local import LocalServer

        with LocalServer(*as_flags(settings), api_key=api_key) as server:
            yield server
    elif kind == "container":
        from earshot.testing.container import WhisperLiveContainer

        gpu = settings.get("device") == "cuda"
        if image is None:  # the image of the installed package, built or reused now
            container = WhisperLiveContainer.from_package(gpu=gpu, api_key=api_key, **settings)
        else:
            WhisperLiveContainer.prepare()
            container = WhisperLiveContainer(image, gpu=gpu, api_key=api_key, **settings)
        with container as server:
            yield server
    else:
        raise ValueError(f"unknown target {kind!r}; use {', '.join(TARGETS)}")

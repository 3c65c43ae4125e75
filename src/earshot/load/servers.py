"""The server a load run drives: earshot's container, the peer's, or a deployment.

Each is opened as a context manager that removes what it started, on every
path. :class:`LoadTarget` carries what the load commands need from it: the
URL, how its final transcript ends (END_OF_TRANSCRIPT or its close), and,
where the server is a container of ours, its memory and sessions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from earshot.testing.http import HttpEndpoints


@dataclass
class LoadTarget:
    name: str
    server: HttpEndpoints
    end_by: str  # "eot" or "close" (the locustfile's --end-by)
    container: Any = None  # the testcontainers object, when we started one

    @property
    def url(self) -> str:
        return self.server.ws_url

    def memory_mib(self) -> float | None:
        """The container's memory as ``docker stats`` counts it (without the page
        cache the kernel may drop), or None where there is no container of ours."""
        if self.container is None:
            return None
        wrapped = self.container.get_wrapped_container()
        try:
            stats = wrapped.stats(stream=False)["memory_stats"]
        finally:
            wrapped.client.api.close()
        cache = stats.get("stats", {}).get("inactive_file", 0)
        return (int(stats["usage"]) - int(cache)) / 2**20

    def sessions(self) -> int | None:
        """Sessions the server reports open, or None where it has no /status."""
        try:
            return len(self.server.own_sessions(self.server.status()))
        except (RuntimeError, ValueError, KeyError, OSError):
            return None


@contextmanager
def open_target(target: str | None, *, peer: bool = False, api_key: str | None = None,
                settings: Mapping[str, object] | None = None,
                image: str | None = None) -> Iterator[LoadTarget]:
    """``target`` (a ws:// URL) as it is, else a container started for the run:
    the peer's image with ``peer``, earshot's otherwise. ``settings`` are server
    options by name; give ``max_clients`` high enough that the load, not the
    limit, decides (the peer takes only that one). ``image``: an earshot image
    to run instead of the one built from this tree."""
    settings = dict(settings or {})
    max_clients = int(settings.get("max_clients", 64))  # type: ignore[call-overload]
    if target:
        from earshot.testing.targets import UrlServer

        yield LoadTarget(f"{target} (a deployment)", UrlServer(target, api_key), "eot")
    elif peer:
        from earshot.testing.peer import PeerContainer, build_peer_image

        with PeerContainer(build_peer_image(), max_clients=max_clients) as server:
            yield LoadTarget("WhisperLive 0.10 (peer image)", server, "close", server)
    else:
        from earshot.testing.container import WhisperLiveContainer
        from earshot.testing.image import ensure_image

        with WhisperLiveContainer(image or ensure_image("cpu"), api_key=api_key,
                                  **settings) as server:
            yield LoadTarget("earshot (cpu image)", server, "eot", server)

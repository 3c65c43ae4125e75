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
from typing import TYPE_CHECKING

from earshot.testing.http import HttpEndpoints
from earshot.testing.targets import open_target as open_server

if TYPE_CHECKING:  # Docker's packages load only when a container is started
    from earshot.testing.container import ServerContainer


@dataclass
class LoadTarget:
    name: str
    server: HttpEndpoints
    end_by: str  # "eot" or "close" (the locustfile's --end-by)
    container: ServerContainer | None = None  # when the run started one

    @property
    def url(self) -> str:
        return self.server.ws_url

    def memory_mib(self) -> float | None:
        """The container's memory without the page cache the kernel may drop, or
        None where there is no container of ours."""
        if self.container is None:
            return None
        return self.container.memory_usage(page_cache=False) / 2**20

    def sessions(self) -> int | None:
        """Sessions the server reports open, or None where it has no /status."""
        try:
            return len(self.server.own_sessions(self.server.server_status()))
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
    if peer:
        from earshot.testing.peer import PeerContainer

        max_clients = int(settings.get("max_clients", 64))  # type: ignore[call-overload]
        with PeerContainer.from_checkout(max_clients=max_clients) as server:
            yield LoadTarget("WhisperLive 0.10 (peer image)", server, "close", server)
    elif target:
        with open_server("url", url=target, api_key=api_key) as server:
            yield LoadTarget(f"{target} (a deployment)", server, "eot")
    else:
        with open_server("container", api_key=api_key, image=image, **settings) as server:
            yield LoadTarget("earshot (cpu image)", server, "eot", server)

"""Plain HTTP to a server's health and status endpoints, shared by every target."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any


class ServerUnreachable(ConnectionError):
    """Nothing answers on the server's port (not started yet, or gone)."""


class HttpEndpoints:
    """URLs, ``get()`` and ``server_status()`` for a server reached at ``host``:``port``.

    (Not ``status``: on a container that name is testcontainers' Docker state.)
    """

    host: str
    port: int | None
    api_key: str | None = None  # sent with every request (and by the suite's clients)
    # A deployment others use too: a test run counts only its own sessions there.
    shared: bool = False

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def auth_headers(self) -> dict[str, str]:
        """Headers every request carries (the API key as a Bearer token, where set)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def get(self, path: str, headers: Mapping[str, str] | None = None,
            timeout: float = 5.0) -> tuple[int, bytes]:
        """An HTTP GET: (status, body). Raises ServerUnreachable if nothing answers."""
        request = urllib.request.Request(
            self.http_url + path, headers={**self.auth_headers(), **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except urllib.error.URLError as exc:  # nothing listening, refused
            raise ServerUnreachable(f"GET {path} failed: {exc.reason}") from exc
        # After the request went out: a hang-up (RemoteDisconnected), a read timeout,
        # an answer that is not HTTP (BadStatusLine) or a body cut short.
        except (OSError, http.client.HTTPException) as exc:
            raise ServerUnreachable(f"GET {path} failed: {exc!r}") from exc

    def server_status(self, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The server's /status as a dict."""
        code, body = self.get("/status", headers)
        if code != 200:
            raise RuntimeError(f"/status answered {code}: {body[:200]!r}")
        return json.loads(body)

    def own_sessions(self, status: dict[str, Any]) -> list[dict[str, Any]]:
        """The sessions of a /status answer this test run may count: all of them
        on a server of its own, only those with this process's uids on a shared one."""
        from earshot.testing.wire import is_own  # the client's ids mark them

        sessions: list[dict[str, Any]] = status["sessions"]
        return [s for s in sessions if is_own(s["uid"])] if self.shared else sessions

"""Plain HTTP on the WebSocket port, answered before any upgrade.

/healthz (alive), /readyz (model loaded and accepting), /status (JSON:
sessions, capacity, model) and /metrics (Prometheus). With an API key set,
/status, /metrics and every WebSocket upgrade need it (Bearer header or
``?token=``, as WhisperLive); the health endpoints stay open for probes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers, MultipleValuesError
from websockets.http11 import Request, Response

from earshot.server.metrics import Metrics


class Endpoints:
    """websockets' ``process_request`` hook: a response, or None to go on to the upgrade."""

    def __init__(
        self,
        api_key: str | None,
        metrics: Metrics,
        readiness: Callable[[], str | None],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        """``readiness`` returns None when ready, else why not ("loading model")."""
        self._api_key = api_key
        self._metrics = metrics
        self._readiness = readiness
        self._status = status

    def __call__(self, conn: ServerConnection, request: Request) -> Response | None:
        try:
            return self._answer(conn, request)
        except MultipleValuesError as exc:  # e.g. two Upgrade headers: a malformed request
            return conn.respond(400, f"the header {exc} may appear only once\n")

    def _answer(self, conn: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == "/healthz":
            return conn.respond(200, "ok\n")
        if path == "/readyz":
            not_ready = self._readiness()
            return conn.respond(200, "ready\n") if not_ready is None else conn.respond(
                503, not_ready + "\n")
        if not self._authorized(request.headers, query):
            self._metrics.connections.labels("unauthorized").inc()
            response = conn.respond(401, "missing or wrong API key (Bearer header or ?token=)\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if path == "/status":
            return _json_response(conn, self._status())
        if path == "/metrics":
            response = conn.respond(200, "")
            response.body = self._metrics.render()
            _set_header(response.headers, "Content-Type", "text/plain; version=0.0.4")
            _set_header(response.headers, "Content-Length", str(len(response.body)))
            return response
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return conn.respond(
                404, "not found: use /healthz, /readyz, /status, /metrics or a WebSocket\n"
            )
        return None

    def _authorized(self, headers: Headers, query: str) -> bool:
        key = self._api_key
        if not key:
            return True
        offered = parse_qs(query).get("token", [""])[0]
        values = headers.get_all("Authorization")
        if len(values) > 1:  # which one counts would be a guess: refused
            return False
        auth = values[0] if values else ""
        if auth.lower().startswith("bearer "):
            offered = auth[7:].strip()
        return hmac.compare_digest(offered.encode(), key.encode())


def _json_response(conn: ServerConnection, data: dict[str, Any]) -> Response:
    response = conn.respond(200, json.dumps(data, indent=2) + "\n")
    _set_header(response.headers, "Content-Type", "application/json")
    return response


def _set_header(headers: Headers, name: str, value: str) -> None:
    del headers[name]
    headers[name] = value

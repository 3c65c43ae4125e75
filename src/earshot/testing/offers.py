"""What a server offers beyond WhisperLive 0.10's protocol, found by probing it.

earshot's server speaks WhisperLive 0.10's protocol (the *core*: config, audio,
END_OF_AUDIO; SERVER_READY, segments, WAIT, ERROR, DISCONNECT) and adds
*extensions* that its clients may ignore. A foreign server (upstream
WhisperLive, another implementation) may lack any extension; checks that need
one are then "not offered" rather than failed. Nothing here asks the user:
``probe()`` tries each extension against the server itself, with one short
session, one malformed config and three HTTP GETs on the same port.

``probe()`` also tells a server that cannot be tested at all
(:class:`TargetError`: unreachable, not a WebSocket server, API key refused)
from one that can, in one line that names the problem.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from earshot import audio, protocol
from earshot.testing import wire

# Each extension, as the report names it, with what offering it means.
EXTENSIONS: dict[str, str] = {
    "session_id": "SERVER_READY names the session (session_id)",
    "end_of_transcript": "after END_OF_AUDIO the server sends every segment completed, "
                         "END_OF_TRANSCRIPT, and closes with 1000",
    "close_codes": "close codes that mean something (1008 bad config or key, "
                   "1013 WAIT, 1001 DISCONNECT or shutdown)",
    "status": "GET /status lists the sessions as JSON",
    "readyz": "GET /readyz answers 200 once the model is loaded",
    "metrics": "GET /metrics serves Prometheus metrics",
}
QUIET_SECONDS = 5.0  # after END_OF_AUDIO, a server with nothing more to say is done
FIRST_REPLY_SECONDS = 60.0  # a server may load its model on the first connection


class TargetError(RuntimeError):
    """The server cannot be tested at all; the text (one line) says why."""


@dataclass(frozen=True)
class Offers:
    """Which extensions a server offers, and what the probe saw for each."""

    offered: frozenset[str]
    seen: Mapping[str, str] = field(default_factory=dict)

    def missing(self, names: tuple[str, ...] | list[str]) -> list[str]:
        unknown = [n for n in names if n not in EXTENSIONS]
        if unknown:
            raise ValueError(f"unknown extension(s) {unknown}; known: {', '.join(EXTENSIONS)}")
        return [n for n in names if n not in self.offered]

    def why_not(self, name: str) -> str:
        return f"not offered: {name} ({self.seen.get(name, 'not probed')})"

    def as_dict(self) -> dict[str, dict[str, object]]:
        return {name: {"offered": name in self.offered, "meaning": meaning,
                       "seen": self.seen.get(name, "")}
                for name, meaning in EXTENSIONS.items()}


def probe(ws_url: str, http_url: str, headers: Mapping[str, str] | None = None,
          timeout: float = 10.0) -> Offers:
    """Probe the server at ``ws_url``/``http_url``; raises TargetError if it cannot be tested."""
    headers = dict(headers or {})
    seen: dict[str, str] = {}
    offered: set[str] = set()
    _session(ws_url, headers, timeout, offered, seen)
    _bad_config(ws_url, headers, timeout, offered, seen)
    _http(http_url, headers, timeout, offered, seen)
    return Offers(frozenset(offered), seen)


def _open(ws_url: str, headers: Mapping[str, str], timeout: float) -> ClientConnection:
    """A WebSocket connection, or a TargetError that says why there is none."""
    try:
        return connect(ws_url, additional_headers=headers, open_timeout=timeout,
                       max_size=None, close_timeout=2)
    except InvalidStatus as exc:
        code = exc.response.status_code
        if code in (401, 403):
            raise _key_error(ws_url, headers, f"HTTP {code} before the upgrade") from None
        raise TargetError(f"{ws_url} is not a WebSocket server: it answered HTTP {code} "
                          "to the upgrade request") from None
    except InvalidHandshake as exc:
        raise TargetError(f"{ws_url} is not a WebSocket server: {exc}") from None
    except TimeoutError:
        raise TargetError(f"cannot reach {ws_url}: no answer within {timeout:g} s") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise TargetError(f"cannot reach {ws_url}: {reason}") from None


def _key_error(ws_url: str, headers: Mapping[str, str], how: str) -> TargetError:
    key = "the API key was refused" if headers else "it needs an API key"
    return TargetError(f"{ws_url}: {key} ({how})")


def _first_reply(ws: ClientConnection, connection: protocol.ClientConnection, ws_url: str,
                 headers: Mapping[str, str]) -> protocol.ServerMessage:
    """The answer to a config; a refusal that makes the server untestable raises."""
    try:
        first = connection.receive(ws.recv(timeout=FIRST_REPLY_SECONDS)).message
    except TimeoutError:
        raise TargetError(f"{ws_url}: no reply to the config within "
                          f"{FIRST_REPLY_SECONDS:g} s") from None
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        if code == protocol.CloseCode.POLICY:
            raise _key_error(ws_url, headers, "closed with 1008 after the config") from None
        raise TargetError(f"{ws_url} closed the connection ({code}) instead of answering "
                          "the config") from None
    except (ValueError, protocol.ProtocolError) as exc:
        raise TargetError(f"{ws_url} does not speak the WhisperLive protocol: {exc}") from None
    if first.kind == "error":
        text = str(first.data.get("message", ""))
        if "key" in text.lower() or "auth" in text.lower():
            raise TargetError(f"{ws_url}: the API key was refused ({text})")
    return first


def _session(ws_url: str, headers: Mapping[str, str], timeout: float,
             offered: set[str], seen: dict[str, str]) -> None:
    """One short session: SERVER_READY's fields, then what follows END_OF_AUDIO."""
    connection = protocol.ClientConnection(wire.uid("probe"))
    with _open(ws_url, headers, timeout) as ws:
        ws.send(connection.send_config(wire.config(uid=connection.uid)))
        first = _first_reply(ws, connection, ws_url, headers)
        if first.kind == "wait":
            raise TargetError(f"{ws_url} is full (it answered WAIT): no session to test")
        if connection.state is not protocol.ClientState.STREAMING:
            raise TargetError(f"{ws_url} answered the config with {first.data} "
                              "instead of SERVER_READY")
        if first.data.get("session_id"):
            offered.add("session_id")
            seen["session_id"] = "SERVER_READY carries session_id"
        else:
            seen["session_id"] = f"SERVER_READY has no session_id: {sorted(first.data)}"
        for piece in audio.chunks(audio.silence(0.5)):
            ws.send(connection.send_audio(piece))
        ws.send(connection.send_end_of_audio())
        kinds = _until_quiet(ws, connection)
        code = ws.close_code
    if "end" in kinds and code == protocol.CloseCode.NORMAL:
        offered.add("end_of_transcript")
        seen["end_of_transcript"] = "END_OF_TRANSCRIPT, then close 1000"
    else:
        closed = f"closed with {code}" if code is not None else (
            f"still open {QUIET_SECONDS:g} s after its last message")
        seen["end_of_transcript"] = (f"after END_OF_AUDIO: {', '.join(kinds) or 'no message'}; "
                                     f"{closed}")


def _until_quiet(ws: ClientConnection, connection: protocol.ClientConnection) -> list[str]:
    """The kinds of message received until the server closes or stays quiet
    ("malformed" for one the protocol refuses)."""
    kinds: list[str] = []
    while True:
        try:
            frame = ws.recv(timeout=QUIET_SECONDS)
        except (TimeoutError, ConnectionClosed):
            return kinds
        try:
            kinds.append(connection.receive(frame).kind)
        except (ValueError, protocol.ProtocolError):
            kinds.append("malformed")


def _bad_config(ws_url: str, headers: Mapping[str, str], timeout: float,
                offered: set[str], seen: dict[str, str]) -> None:
    """A config that is not JSON: earshot answers ERROR and closes with 1008."""
    connection = protocol.ClientConnection(wire.uid("bad-config"))
    with _open(ws_url, headers, timeout) as ws:
        ws.send(connection.send_config("this is not JSON"))
        kinds = _until_quiet(ws, connection)
        code = ws.close_code
    if code == protocol.CloseCode.POLICY:
        offered.add("close_codes")
        seen["close_codes"] = "a config that is not JSON: close 1008"
    else:
        closed = f"close {code}" if code is not None else "no close"
        seen["close_codes"] = (f"a config that is not JSON: {', '.join(kinds) or 'no message'}, "
                               f"{closed} (earshot: ERROR, 1008)")


def _get(url: str, headers: Mapping[str, str], timeout: float) -> tuple[int | None, bytes]:
    try:  # a malformed URL, too, gets no HTTP answer (ValueError from Request, InvalidURL)
        request = urllib.request.Request(url, headers=dict(headers))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError, ValueError, http.client.InvalidURL) as exc:
        return None, str(getattr(exc, "reason", exc)).encode()


def _http(http_url: str, headers: Mapping[str, str], timeout: float,
          offered: set[str], seen: dict[str, str]) -> None:
    """/readyz, /status and /metrics on the WebSocket port."""
    checks = {
        "readyz": ("/readyz", lambda body: True),
        "status": ("/status", _is_status),
        "metrics": ("/metrics", lambda body: b"# TYPE" in body),
    }
    for name, (path, valid) in checks.items():
        started = time.monotonic()
        code, body = _get(http_url + path, headers, timeout)
        took = time.monotonic() - started
        if code == 200 and valid(body):
            offered.add(name)
            seen[name] = f"GET {path}: 200 in {took * 1000:.0f} ms"
        elif code is None:
            seen[name] = f"GET {path}: no HTTP answer ({body.decode(errors='replace')})"
        else:
            seen[name] = f"GET {path}: HTTP {code}" + ("" if code != 200 else ", not the format")


def _is_status(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and isinstance(data.get("sessions"), list)

"""The streaming client: explicit states, owned resources, reconnection.

``AsyncTranscriptionClient`` is the asyncio core; ``TranscriptionClient`` a
synchronous facade that runs it on a private event-loop thread.
"""

from earshot.client.core import AsyncTranscriptionClient
from earshot.client.errors import (
    ClientClosed,
    ClientError,
    ConnectError,
    ConnectionLost,
    ServerBusy,
    ServerRejected,
    ThreadLeak,
    TranscriptTimeout,
)
from earshot.client.reconnect import ReconnectPolicy
from earshot.client.state import TRANSITIONS, ConnectionState, IllegalTransition, Transition
from earshot.client.sync import TranscriptionClient

__all__ = [
    "TRANSITIONS",
    "AsyncTranscriptionClient",
    "ClientClosed",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "ConnectionState",
    "IllegalTransition",
    "ReconnectPolicy",
    "ServerBusy",
    "ServerRejected",
    "ThreadLeak",
    "TranscriptTimeout",
    "TranscriptionClient",
    "Transition",
]

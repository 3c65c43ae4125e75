"""A TCP proxy that injects real network trouble, with toxics modelled on Toxiproxy's.

The kernel here has no netem and Toxiproxy cannot be installed, so this is the
way to real latency: a user-space proxy between client and server. It runs
its own event loop on its own thread, so sync and async tests alike can use
it, and toxics can be added and removed while traffic flows.

Each connection has two directions, ``upstream`` (client to server) and
``downstream`` (server to client). Each direction has its own toxics, applied
in the order they were added: small objects (``toxics``) that each do one
thing to a chunk and pass it on, combined with ``|`` into a ``Chain``.
Stacked latencies add up. Each direction buffers a bounded amount
(``connection``), so a slow or held link pushes back on the sender.

    with Proxy("127.0.0.1", server_port) as proxy:
        proxy.add(Latency(150, jitter_ms=50) | Bandwidth(125), direction="downstream")
        ... connect to proxy.port (or proxy.ws_url) ...
        proxy.clear()
"""

from earshot.testing.proxy.connection import BUFFER_BYTES, CHUNK
from earshot.testing.proxy.server import DIRECTIONS, Direction, Proxy
from earshot.testing.proxy.toxics import (
    PROFILES,
    Bandwidth,
    Blackhole,
    Chain,
    Chunk,
    Cut,
    Latency,
    Link,
    ResetPeer,
    Slicer,
    Timeout,
    Toxic,
)

__all__ = [
    "BUFFER_BYTES",
    "CHUNK",
    "DIRECTIONS",
    "PROFILES",
    "Bandwidth",
    "Blackhole",
    "Chain",
    "Chunk",
    "Cut",
    "Direction",
    "Latency",
    "Link",
    "Proxy",
    "ResetPeer",
    "Slicer",
    "Timeout",
    "Toxic",
]

"""Deadlines derived from a network's toxics, so no test carries its own magic numbers.

A scenario over the proxy waits for connect, first text, final transcript and
close. Each deadline is what the server needs on a loaded machine (one
constant per step, measured without a proxy, with headroom) plus what the
network adds: round trips at the worst jitter, and the time to push the
audio through the narrowest bandwidth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from earshot import protocol
from earshot.testing.proxy import Bandwidth, Latency, Toxic

# What the server itself takes, on a 2-core machine under CI load (about 3x
# what docs/benchmarks.md measured on an idle one: 1.05-1.45 s to the first
# text, 0.2-1.0 s for the final pass). The final pass gets more: when no segment
# was completed yet it covers the whole window (11 s of speech in the network
# scenarios), and under make integration's parallel run the shared server also
# decodes its neighbours' streams; 5.06 s was seen there once, on 8 workers.
SERVER_CONNECT_S = 2.0
SERVER_FIRST_TEXT_S = 5.0
SERVER_FINAL_S = 10.0
SERVER_CLOSE_S = 2.0
AUDIO_BYTES_PER_S = protocol.SAMPLE_RATE * 4  # float32 frames, as the client sends


@dataclass(frozen=True)
class Budget:
    """One-way delay bounds of a link, and the deadlines they give each step."""

    one_way_min_s: float  # latency less jitter, per direction
    one_way_max_s: float  # latency plus jitter
    rate_bytes_per_s: float | None  # the narrowest Bandwidth toxic; None: unlimited

    @property
    def round_trip_min_s(self) -> float:
        return 2 * self.one_way_min_s

    @property
    def round_trip_max_s(self) -> float:
        return 2 * self.one_way_max_s

    def transfer_s(self, nbytes: float) -> float:
        return 0.0 if self.rate_bytes_per_s is None else nbytes / self.rate_bytes_per_s

    @property
    def connect_s(self) -> float:
        """Upgrade request and response, then config and SERVER_READY: two round trips."""
        return SERVER_CONNECT_S + 2 * self.round_trip_max_s

    @property
    def connect_min_s(self) -> float:
        """No connection can be faster than those two round trips at the least delay."""
        return 2 * self.round_trip_min_s

    @property
    def first_text_s(self) -> float:
        """From the first audio sent: the audio over, one pass, the text back."""
        return SERVER_FIRST_TEXT_S + self.round_trip_max_s + self.transfer_s(AUDIO_BYTES_PER_S)

    def final_s(self, backlog_s: float = 1.0) -> float:
        """From END_OF_AUDIO: the unsent backlog and END_OF_AUDIO over, the last pass,
        the transcript back."""
        return (SERVER_FINAL_S + self.round_trip_max_s
                + self.transfer_s(backlog_s * AUDIO_BYTES_PER_S))

    @property
    def close_s(self) -> float:
        """A closing handshake: one round trip."""
        return SERVER_CLOSE_S + self.round_trip_max_s


def budget(toxics: Iterable[Toxic]) -> Budget:
    """The budget of a link whose every direction carries ``toxics``
    (as ``Proxy.apply_profile`` applies them); stacked latencies add up."""
    toxics = list(toxics)
    latencies = [t for t in toxics if isinstance(t, Latency)]
    rates = [t.rate_kbps * 1000 for t in toxics if isinstance(t, Bandwidth)]
    return Budget(
        one_way_min_s=sum(max(0.0, t.latency_ms - t.jitter_ms) for t in latencies) / 1000,
        one_way_max_s=sum(t.latency_ms + t.jitter_ms for t in latencies) / 1000,
        rate_bytes_per_s=min(rates) if rates else None,
    )

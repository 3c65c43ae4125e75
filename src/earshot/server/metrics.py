"""Prometheus metrics, one registry per server so several can share a process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Counter(
            "earshot_connections", "Connections by outcome", ["outcome"], registry=r
        )
        self.sessions = Gauge("earshot_sessions_active", "Sessions being served", registry=r)
        self.audio_seconds = Counter(
            "earshot_audio_seconds", "Seconds of audio received", registry=r
        )
        self.passes = Histogram(
            "earshot_inference_pass_seconds",
            "Duration of one inference pass",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.errors = Counter(
            "earshot_client_errors", "Connections closed for a client error", ["reason"],
            registry=r,
        )
        self.queue = Gauge("earshot_inference_queue", "Sessions waiting for a pass", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

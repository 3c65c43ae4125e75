"""The proxy's named profiles: the README's values, one-way, on each direction."""

from __future__ import annotations

import pytest

from earshot.testing.proxy import Bandwidth, Latency, Proxy

# README: lan, wifi (20 ms +- 10), cellular (150 ms +- 50, 1 Mbit/s), intercontinental
# (300 ms +- 30); one-way values on each direction. 1 Mbit/s is 125 kilobytes/s.
PROFILES = {
    "lan": [Latency(1, jitter_ms=0.5)],
    "wifi": [Latency(20, jitter_ms=10)],
    "cellular": [Latency(150, jitter_ms=50), Bandwidth(125)],
    "intercontinental": [Latency(300, jitter_ms=30)],
}


@pytest.mark.parametrize("name", list(PROFILES))
def test_a_profile_puts_its_one_way_values_on_each_direction(name: str) -> None:
    with Proxy("127.0.0.1", 9) as proxy:
        assert proxy.apply_profile(name) == PROFILES[name]
        assert proxy.toxics("upstream") == proxy.toxics("downstream") == PROFILES[name]

"""Deadlines from a link's toxics: what the server needs plus what the network adds."""

from __future__ import annotations

import pytest

from earshot import protocol
from earshot.testing import budgets
from earshot.testing.budgets import (
    AUDIO_BYTES_PER_S,
    SERVER_CLOSE_S,
    SERVER_CONNECT_S,
    SERVER_FINAL_S,
    SERVER_FIRST_TEXT_S,
    Budget,
    budget,
)
from earshot.testing.proxy import PROFILES, Bandwidth, Latency, Slicer


def test_audio_is_counted_as_the_client_sends_it_float32_frames() -> None:
    assert AUDIO_BYTES_PER_S == protocol.SAMPLE_RATE * 4


def test_a_link_without_toxics_leaves_the_servers_own_time() -> None:
    free = budget([])
    assert free == Budget(0.0, 0.0, None)
    assert free.connect_s == SERVER_CONNECT_S and free.connect_min_s == 0.0
    assert free.first_text_s == SERVER_FIRST_TEXT_S
    assert free.final_s() == free.final_s(60.0) == SERVER_FINAL_S  # no rate: no transfer
    assert free.close_s == SERVER_CLOSE_S


def test_latency_gives_one_way_bounds_of_latency_less_and_plus_jitter() -> None:
    limits = budget([Latency(100, jitter_ms=30)])
    assert limits.one_way_min_s == pytest.approx(0.070)
    assert limits.one_way_max_s == pytest.approx(0.130)
    assert limits.round_trip_min_s == pytest.approx(0.140)
    assert limits.round_trip_max_s == pytest.approx(0.260)


def test_jitter_larger_than_the_latency_never_makes_a_delay_negative() -> None:
    limits = budget([Latency(10, jitter_ms=50), Latency(100)])
    assert limits.one_way_min_s == pytest.approx(0.100)  # 0 + 100 ms, not -40 + 100
    assert limits.one_way_max_s == pytest.approx(0.160)


def test_the_narrowest_bandwidth_sets_the_rate_and_other_toxics_add_nothing() -> None:
    limits = budget(iter([Bandwidth(500), Slicer(10), Bandwidth(125), Bandwidth(1000)]))
    assert limits.rate_bytes_per_s == 125_000  # kilobytes per second, as Toxiproxy's
    assert limits.one_way_min_s == limits.one_way_max_s == 0.0
    assert limits.transfer_s(250_000) == pytest.approx(2.0)


def test_each_deadline_adds_its_round_trips_and_transfer_to_the_servers_time() -> None:
    limits = Budget(one_way_min_s=0.1, one_way_max_s=0.3, rate_bytes_per_s=32_000)
    # connect: the upgrade, then config and SERVER_READY: two round trips
    assert limits.connect_s == pytest.approx(SERVER_CONNECT_S + 2 * 0.6)
    assert limits.connect_min_s == pytest.approx(2 * 0.2)
    # first text: a second of audio over (2 s at 32 kB/s), one round trip
    assert limits.first_text_s == pytest.approx(SERVER_FIRST_TEXT_S + 0.6 + 2.0)
    # final: the backlog (1 s unless told) over, one round trip
    assert limits.final_s() == pytest.approx(SERVER_FINAL_S + 0.6 + 2.0)
    assert limits.final_s(backlog_s=3.0) == pytest.approx(SERVER_FINAL_S + 0.6 + 6.0)
    assert limits.close_s == pytest.approx(SERVER_CLOSE_S + 0.6)


def test_no_deadline_is_shorter_than_the_fastest_possible_connection() -> None:
    for name, toxics in PROFILES.items():
        limits = budgets.budget(toxics)
        assert limits.connect_min_s <= limits.connect_s, name
        assert limits.round_trip_min_s <= limits.round_trip_max_s, name

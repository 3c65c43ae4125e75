"""Client parts without a server: the transition table, throttle, transcript, ids."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from earshot.client import ClientClosed, ClientError, ConnectionLost
from earshot.client.ids import new_id
from earshot.client.state import (
    TRANSITIONS,
    ConnectionState,
    IllegalTransition,
    StateMachine,
)
from earshot.client.throttle import Throttle
from earshot.protocol import Segment, Transcript

S = ConnectionState
LEGAL = {
    (S.DISCONNECTED, S.CONNECTING),
    (S.CONNECTING, S.CONNECTED), (S.CONNECTING, S.DISCONNECTED), (S.CONNECTING, S.CLOSING),
    (S.CONNECTED, S.READY), (S.CONNECTED, S.CLOSING), (S.CONNECTED, S.DISCONNECTED),
    (S.READY, S.CLOSING), (S.READY, S.DISCONNECTED),
    (S.CLOSING, S.DISCONNECTED),
}


def test_the_table_is_exactly_the_designed_one() -> None:
    table = {(old, new) for old, news in TRANSITIONS.items() for new in news}
    assert table == LEGAL


@pytest.mark.parametrize(("old", "new"), list(itertools.product(S, S)))
async def test_every_transition_is_allowed_or_raises(old, new) -> None:
    machine = StateMachine()
    machine.state = old  # set up the starting state directly
    if (old, new) in LEGAL:
        transition = machine.move(new, "test")
        assert (transition.old, transition.new, machine.state) == (old, new, new)
        assert machine.history[-1] is transition and transition.at > 0
    else:
        with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
            machine.move(new, "test")
        assert machine.state is old and machine.history == []


async def test_listeners_see_every_transition_and_waiters_wake() -> None:
    machine = StateMachine()
    seen = []
    machine.add_listener(lambda t: seen.append((t.old, t.new)))
    machine.add_listener(lambda t: 1 / 0)  # a broken listener does not stop the others
    machine.move(S.CONNECTING)
    machine.move(S.CONNECTED)
    assert seen == [(S.DISCONNECTED, S.CONNECTING), (S.CONNECTING, S.CONNECTED)]
    await machine.wait_for(S.CONNECTED, timeout=1)  # already there
    with pytest.raises(TimeoutError, match=r"READY not reached within 0\.05 s; still CONNECTED"):
        await machine.wait_for(S.READY, timeout=0.05)


async def test_a_waiter_wakes_once_its_state_is_reached_through_others() -> None:
    machine = StateMachine()
    waiter = asyncio.create_task(machine.wait_for(S.READY, timeout=5))
    await asyncio.sleep(0)  # let it start waiting (a turn of the loop, not a wait for time)
    for state in (S.CONNECTING, S.CONNECTED):
        machine.move(state)
        await asyncio.sleep(0)
        assert not waiter.done()  # a change to another state does not end the wait
    machine.move(S.READY)
    await asyncio.wait_for(waiter, 1)


async def test_every_transition_is_recorded_with_its_reason() -> None:
    machine = StateMachine()
    machine.move(S.CONNECTING, "connect() called")
    machine.move(S.DISCONNECTED, "refused")
    machine.move(S.CONNECTING)
    assert [(t.old, t.new, t.reason) for t in machine.history] == [
        (S.DISCONNECTED, S.CONNECTING, "connect() called"),
        (S.CONNECTING, S.DISCONNECTED, "refused"),
        (S.DISCONNECTED, S.CONNECTING, ""),  # no reason given: an empty one
    ]
    with pytest.raises(IllegalTransition, match=r"CONNECTING -> READY is not allowed \(early\)"):
        machine.move(S.READY, "early")


async def test_a_failing_listener_is_logged_with_its_transition(
        caplog: pytest.LogCaptureFixture) -> None:
    machine = StateMachine()
    machine.add_listener(lambda t: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="earshot.client"):
        transition = machine.move(S.CONNECTING, "go")
    [record] = [r for r in caplog.records if r.name == "earshot.client"]
    assert record.getMessage() == f"state listener failed on {transition}"
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert machine.state is S.CONNECTING  # the move itself went through


def test_throttle_spaces_attempts_on_an_injected_clock() -> None:
    now = [100.0]
    throttle = Throttle(min_interval=2.0, clock=lambda: now[0])
    assert throttle.reserve() == 0.0
    assert throttle.reserve() == 2.0  # booked right away: wait 2 s
    assert throttle.reserve() == 4.0  # the next slot after that
    now[0] = 110.0
    assert throttle.reserve() == 0.0  # long enough since the last one
    now[0] = 111.5
    assert throttle.reserve() == pytest.approx(0.5)


def test_a_late_start_moves_the_next_slot() -> None:
    now = [100.0]
    throttle = Throttle(min_interval=2.0, clock=lambda: now[0])
    assert throttle.reserve() == 0.0
    throttle.started()
    assert throttle.reserve() == 2.0  # slot at 102
    now[0] = 102.5  # woken late: the attempt starts at 102.5, not 102
    throttle.started()
    assert throttle.reserve() == pytest.approx(2.0)  # 104.5, not 104: 2 s after the start


def test_a_start_keeps_the_slots_already_booked_for_later_attempts() -> None:
    now = [100.0]
    throttle = Throttle(min_interval=2.0, clock=lambda: now[0])
    assert throttle.reserve() == 0.0  # slot at 100
    assert throttle.reserve() == 2.0  # slot at 102, booked before the first one starts
    throttle.started()  # the first attempt starts on time, at 100
    assert throttle.reserve() == 4.0  # 104: after the booking at 102, not 2 s after 100


def test_an_attempt_started_without_a_booking_spaces_the_next_one() -> None:
    now = [100.0]
    throttle = Throttle(min_interval=2.0, clock=lambda: now[0])
    throttle.started()
    assert throttle.reserve() == 2.0


def test_zero_interval_never_waits() -> None:
    throttle = Throttle()
    assert [throttle.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]


def test_a_negative_interval_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match=r"^min_interval must not be negative$"):
        Throttle(-1)
    assert Throttle(0.0).reserve() == 0.0  # zero is allowed: no spacing at all


def test_ids_are_unique_even_in_a_tight_loop() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_transcript_accumulates_across_updates_and_sessions() -> None:
    t = Transcript()
    assert t.apply([Segment(0, 1, "a", True), Segment(1, 2, "b")], 1.0, "s1")
    assert not t.apply([Segment(0, 1, "a", True), Segment(1, 2, "b")], 2.0, "s1")
    assert t.apply([Segment(0, 1, "a", True), Segment(1, 2, "bc", True)], 3.0, "s1")
    assert t.partial is None and t.text == "a bc" and t.confirmed_until == 2.0
    assert [r.received_at for r in t.received] == [1.0, 3.0]
    t.offset = 2.0  # a new session whose audio starts at stream time 2 s
    t.apply([Segment(0, 1.5, "d", True)], 4.0, "s2")
    assert [(s.start, s.end, s.text) for s in t.completed][-1] == (2.0, 3.5, "d")
    assert t.received[-1].session_id == "s2"


def test_client_closed_and_connection_lost_are_siblings() -> None:
    """Callers handle them apart (a lost session may be retried; a closed client is
    its owner's doing), so neither is a kind of the other; both are ClientErrors."""
    assert not issubclass(ClientClosed, ConnectionLost)
    assert not issubclass(ConnectionLost, ClientClosed)
    assert issubclass(ClientClosed, ClientError) and issubclass(ConnectionLost, ClientError)
    assert ClientClosed("why").reason == "why"

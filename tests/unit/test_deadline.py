"""Deadline: one watchdog thread fires every open deadline, and only open ones.

Real time is used (the watchdog sleeps on a monotonic clock), but nothing here asserts
on elapsed time: waits are hang budgets and the asserts are on what happened.
"""

from __future__ import annotations

import socket
import threading

from rotator.deadline import Deadline

BUDGET = 30.0  # a hang detector, not a speed requirement


class FakeSocket:
    """Records shutdown() as the deadline calls it."""

    def __init__(self) -> None:
        self.shut = threading.Event()
        self.hows: list[int] = []

    def shutdown(self, how: int) -> None:
        self.hows.append(how)
        self.shut.set()


def watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deadline"]


def test_a_passed_deadline_shuts_the_exchange_socket() -> None:
    sock = FakeSocket()
    with Deadline(0.05) as deadline:
        deadline.attach(sock)
        assert sock.shut.wait(BUDGET)
        assert deadline.fired
        assert deadline.expired()
    assert sock.hows == [socket.SHUT_RDWR]


def test_a_socket_attached_after_the_deadline_is_shut_at_once() -> None:
    with Deadline(0.0) as deadline:
        while not deadline.fired:  # the watchdog fires it as soon as it sees it
            threading.Event().wait(0.01)
        late = FakeSocket()
        deadline.attach(late)
        assert late.hows == [socket.SHUT_RDWR]


def test_an_earlier_deadline_wakes_the_watchdog_sleeping_for_a_later_one() -> None:
    far, near = FakeSocket(), FakeSocket()
    with Deadline(3600) as long_one:
        long_one.attach(far)
        with Deadline(0.05) as short_one:
            short_one.attach(near)
            # Without the wake-up the watchdog would sleep for the hour-long deadline.
            assert near.shut.wait(BUDGET)
    assert far.hows == []
    assert not long_one.fired


def test_a_finished_exchange_is_never_fired_and_one_thread_serves_all() -> None:
    closed = [FakeSocket() for _ in range(50)]
    deadlines = []
    for sock in closed:
        with Deadline(1.0) as deadline:  # closed long before its time
            deadline.attach(sock)
        deadlines.append(deadline)
    marker = FakeSocket()
    with Deadline(1.5) as later:
        later.attach(marker)
        assert marker.shut.wait(BUDGET)  # by now every earlier deadline has come due
    assert [sock.hows for sock in closed] == [[]] * 50
    assert not any(deadline.fired for deadline in deadlines)
    assert len(watchdogs()) == 1

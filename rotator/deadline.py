"""An overall deadline for one HTTP exchange (connect, headers and body).

requests' read timeout bounds each socket read, not the exchange: a server or
proxy that drips a byte at a time would hold a job for ever. A ``Deadline`` is
entered around one request; the session's connections (see ``mount``) tell it
which socket the exchange uses, and a timer shuts that socket down when the
deadline passes, which wakes any blocked read with an error.

One watchdog thread serves every deadline of the process: a thread per exchange
(``threading.Timer``) cost a thread start and a cancel hand-off per token request.
The watchdog sleeps until the earliest deadline still open and is woken only by a
deadline earlier than that; a finished exchange is dropped when it reaches the top of
the heap, so with equal deadlines it wakes about once per deadline length.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import socket
import threading
import time
from types import TracebackType
from typing import Any

_current = threading.local()


class Deadline:
    """`with Deadline(seconds) as deadline:` around one exchange on this thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self.fired = False
        self.is_open = False  # between __enter__ and __exit__: the watchdog may fire it

    def __enter__(self) -> Deadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self.is_open = True
        _WATCHDOG.watch(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:  # a firing in progress finishes first: no socket is shut later
            self.is_open = False  # the watchdog drops it when it reaches the top
        _current.deadline = self._previous

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self._end

    def attach(self, sock: Any) -> None:
        """The exchange uses `sock` (shut at once if the deadline already passed)."""
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            late = self.fired
        if late:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            if not self.is_open:
                return
            self.fired = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """One thread that fires every open Deadline when its time comes."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        with self._cond:
            # The thread already wakes by the earliest entry: wake it only for an earlier one.
            is_earlier = not self._heap or deadline._end < self._heap[0][0]
            heapq.heappush(self._heap, (deadline._end, next(self._seq), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="deadline", daemon=True)
                self._thread.start()
            elif is_earlier:
                self._cond.notify()

    def _due(self) -> list[Deadline]:
        """Pop what is due or finished; wait (under the lock) until the next entry is."""
        due: list[Deadline] = []
        heap = self._heap
        while not due:
            now = time.monotonic()
            while heap and (not heap[0][2].is_open or heap[0][0] <= now):
                _, _, deadline = heapq.heappop(heap)
                if deadline.is_open:
                    due.append(deadline)
            if not due:
                self._cond.wait(min(heap[0][0] - now, threading.TIMEOUT_MAX) if heap else None)
        return due

    def _loop(self) -> None:
        while True:
            with self._cond:
                due = self._due()
            for deadline in due:
                deadline._fire()


_WATCHDOG = _Watchdog()


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _attach_current(sock: Any) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.attach(sock)


@functools.cache
def _pool_classes() -> dict[str, type]:
    """urllib3 pools whose connections report their socket to the current Deadline
    once a request is sent (built on first use: urllib3 stays off the import path)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _HTTPConnection(HTTPConnection):
        def getresponse(self) -> Any:
            _attach_current(self.sock)  # the request is sent: headers and body come next
            return super().getresponse()

    class _HTTPSConnection(HTTPSConnection):
        def getresponse(self) -> Any:
            _attach_current(self.sock)
            return super().getresponse()

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    return {"http": _HTTPPool, "https": _HTTPSPool}


def mount(adapter: Any) -> None:
    """Make a requests HTTPAdapter's direct connections report to the current Deadline."""
    adapter.poolmanager.pool_classes_by_scheme = dict(_pool_classes())

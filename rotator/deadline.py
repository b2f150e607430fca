"""An overall deadline for one HTTP exchange (connect, headers and body).

requests' read timeout bounds each socket read, not the exchange: a server or
proxy that drips a byte at a time would hold a job for ever. A ``Deadline`` is
entered around one request; the session's connections (see ``mount``) tell it
which socket the exchange uses, and a timer shuts that socket down when the
deadline passes, which wakes any blocked read with an error.
"""

from __future__ import annotations

import contextlib
import functools
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
        self._timer: threading.Timer | None = None
        self.fired = False

    def __enter__(self) -> Deadline:
        self._previous = getattr(_current, "deadline", None)
        _current.deadline = self
        self._timer = threading.Timer(max(0.0, self._end - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
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
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


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

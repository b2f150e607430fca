"""The one polling core of the store watchers.

``Poller`` reads every store in ``readers`` from one background thread, one after the
other, then waits ``interval`` and starts again, until ``stop()``. Each read is handed to
``record(store, started, ended, value)`` or, when the reader raised, to
``record_error(store, started, ended, exc)``: the watchers (``watch.StoreWatcher``,
``history.HistoryWatcher``, ``cli.ConsumerWatcher``) differ only in what they keep and
check, never in how they poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Self

Reader = Callable[[], "str | None"]


class Poller:
    """Polls every reader in turn from one thread until ``stop()``; a context manager."""

    def __init__(
        self, readers: Mapping[str, Reader], *, interval: float, name: str = "store-watcher"
    ) -> None:
        self.readers = dict(readers)
        self.interval = interval
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_event.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop_event.is_set():
            for store, read in self.readers.items():
                started = time.time()
                try:
                    value = read()
                except Exception as exc:  # noqa: BLE001 - recorded by the watcher, asserted by the test
                    self.record_error(store, started, time.time(), exc)
                else:
                    self.record(store, started, time.time(), value)
            self._stop_event.wait(self.interval)

    def record(self, store: str, started: float, ended: float, value: str | None) -> None:
        """One successful read (``value`` None: nothing published)."""
        raise NotImplementedError

    def record_error(self, store: str, started: float, ended: float, exc: Exception) -> None:
        """One read that raised."""
        raise NotImplementedError

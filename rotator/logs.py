"""Logging set-up: one line per event, text or JSON, with secrets scrubbed.

Nothing here logs a request, a response body or an environment; the scrub is
a last line of defence for any registered secret that slips into a message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from rotator.secret import scrub

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


class _ScrubbingFormatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self._json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if record.levelno <= logging.DEBUG:
                # debug: the chain of causes, each one line, scrubbed; never a traceback
                message = f"{message}: {cause_chain(error)}"
            else:
                message = f"{message}: {type(error).__name__}"
        message = scrub(" ".join(message.split()))
        # milliseconds, truncated (as %f[:-3] was); isoformat is half strftime's cost
        when = datetime.fromtimestamp(record.created, UTC).replace(tzinfo=None)
        ts = when.isoformat(timespec="milliseconds")
        if self._json:
            return json.dumps(
                {
                    "time": ts + "Z",
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "message": message,
                },
                ensure_ascii=False,
            )
        return f"{ts}Z {record.levelname:<7} {message}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that formats (and scrubs) a record before taking the lock: the
    lock is held only to write a finished line, so 32 workers logging at once do not
    queue behind one another's formatting."""

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except Exception:  # as logging.Handler.emit does: report, never raise
            self.handleError(record)
            return True
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
                self.flush()
            except Exception:
                self.handleError(record)
        return True


MAX_CHAIN = 8


def cause_chain(error: BaseException, limit: int = 200) -> str:
    """`Type: text <- caused by Type: text ...`, each text flattened, capped and
    scrubbed of every registered secret (the caller scrubs the whole line again)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < MAX_CHAIN:
        seen.add(id(current))
        text = scrub(" ".join(str(current).split()))
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    return " <- caused by ".join(parts)


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once; quiet chatty libraries."""
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(_ScrubbingFormatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Our lines show none of the caller's file and line, thread, process or
    # multiprocessing name: the logging docs' "Optimization" settings skip collecting
    # them (a stack walk and a getpid() for every record, two records a rotation).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for noisy in ("apscheduler", "botocore", "boto3", "urllib3", "s3transfer", "tenacity"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # APScheduler logs job exceptions with tracebacks; our jobs never raise, but be sure.
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)

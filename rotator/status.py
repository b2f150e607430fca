"""`rotator status`: every credential and target with its published token's
time left. Reads the stores only; never talks to the token endpoint."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TextIO

from rotator.app import App
from rotator.clock import format_instant
from rotator.errors import EXIT_FAILED, EXIT_OK, RotatorError
from rotator.schedule import Schedule
from rotator.stores.base import Reading
from rotator.stores.batch import read_batched
from rotator.stores.quota import SM_VERSION_QUOTA, versions_created


@dataclass(frozen=True)
class Row:
    credential: str
    target: str
    state: str  # fresh | due | expired | missing | unreadable | opaque | error
    issued_at: str | None = None
    expires_at: str | None = None
    seconds_left: float | None = None
    is_due: bool | None = None
    detail: str | None = None
    versions_24h: int | None = None  # Secrets Manager: versions created in the last 24 h


def collect(app: App) -> list[Row]:
    now = app.clock.now()
    rows: list[Row] = []
    stores = {
        (cred.name, target.label): app.store(target)
        for cred in app.settings.credentials
        for target in cred.targets
    }
    batched = read_batched(stores.values())  # SSM: 10 a call; Secrets Manager: 20
    for cred in app.settings.credentials:
        schedule = app.schedule(cred)
        for target in cred.targets:
            store = stores[(cred.name, target.label)]
            try:
                reading = batched.get(store.name) or store.get()
                versions = versions_created(store, now, reading)
            except RotatorError as exc:
                rows.append(Row(cred.name, target.label, "error", detail=str(exc)))
                continue
            row = _row(cred.name, target.label, reading, schedule, now)
            rows.append(row if versions is None else replace(row, versions_24h=versions))
    return rows


def _row(credential: str, label: str, reading: Reading, schedule: Schedule, now: datetime) -> Row:
    if reading.is_missing:
        return Row(credential, label, "missing", is_due=True)
    if reading.problem:
        return Row(credential, label, "unreadable", is_due=True, detail=reading.problem)
    token = reading.token
    if token is None:
        return Row(credential, label, "opaque", detail="raw token, no expiry")
    left = (token.expires_at - now).total_seconds()
    due = schedule.is_due(token, now)
    return Row(
        credential,
        label,
        "expired" if left <= 0 else ("due" if due else "fresh"),
        issued_at=format_instant(token.issued_at),
        expires_at=format_instant(token.expires_at),
        seconds_left=round(left, 1),
        is_due=due,
    )


_COLOURS = {
    "fresh": "\033[32m",
    "due": "\033[33m",
    "expired": "\033[31m",
    "missing": "\033[31m",
    "unreadable": "\033[31m",
    "error": "\033[31m",
    "opaque": "\033[36m",
}


def _left(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "0s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render(rows: list[Row], *, colour: bool) -> str:
    header = ("CREDENTIAL", "TARGET", "STATE", "LEFT", "ISSUED_AT", "EXPIRES_AT", "DUE")
    table = [header]
    for row in rows:
        table.append(
            (
                row.credential,
                row.target,
                row.state,
                _left(row.seconds_left),
                row.issued_at or "-",
                row.expires_at or "-",
                "-" if row.is_due is None else ("yes" if row.is_due else "no"),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, cells in enumerate(table):
        parts = []
        for i, cell in enumerate(cells):
            text = cell.ljust(widths[i])
            if colour and n > 0 and i == 2:
                text = f"{_COLOURS.get(cell, '')}{text}\033[0m"
            elif colour and n == 0:
                text = f"\033[1m{text}\033[0m"
            parts.append(text)
        lines.append("  ".join(parts).rstrip())
    for row in rows:
        if row.detail and row.state in ("error", "unreadable"):
            lines.append(f"  {row.credential} {row.target}: {row.detail}")
    for row in rows:
        if row.versions_24h is not None:
            lines.append(
                f"  {row.credential} {row.target}: {row.versions_24h} of {SM_VERSION_QUOTA} "
                "versions created in the last 24 h"
            )
    return "\n".join(lines) + "\n"


def status(app: App, *, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = collect(app)
    if as_json:
        out.write(json.dumps([row.__dict__ for row in rows], indent=2) + "\n")
    else:
        out.write(render(rows, colour=out.isatty()))
    bad = any(row.state in ("missing", "expired", "unreadable", "error") for row in rows)
    return EXIT_FAILED if bad else EXIT_OK

"""Reload the configuration under a running daemon (SIGHUP, or the --config file
changing on disk, as a Kubernetes ConfigMap volume does).

``plan`` is the pure diff of two configurations; ``Reloader`` loads the new one,
refuses it with one line when it is invalid (the running one is kept) and
otherwise hands the daemon the chains to stop and to start. A changed credential
is stopped and started again: its new chain begins by reading its targets, so a
published token that is still fresh is adopted, with no token request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rotator.errors import RotatorError

if TYPE_CHECKING:
    from rotator.app import App
    from rotator.config import Settings
    from rotator.scheduler import Daemon

log = logging.getLogger("rotator")

# Process-level settings a running daemon cannot change (the port is bound, the
# worker pool is built): a reload that changes them says a restart is needed.
RESTART_KEYS = ("metrics_port", "metrics_address", "max_workers")


@dataclass(frozen=True)
class Plan:
    """What a reload changes, by credential name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()  # process-level keys that changed

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def describe(self) -> str:
        def names(items: tuple[str, ...]) -> str:
            return ",".join(items) or "-"

        return (
            f"added={names(self.added)} removed={names(self.removed)} changed={names(self.changed)}"
        )


def plan(old: Settings, new: Settings) -> Plan:
    """The diff of two configurations. A credential is changed when any of its
    settings differs (targets, schedule, secret source, auth method, URLs...);
    credentials are compared by their settings, never by secret values."""
    before = {c.name: c for c in old.credentials}
    after = {c.name: c for c in new.credentials}
    return Plan(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
        needs_restart=tuple(k for k in RESTART_KEYS if getattr(old, k) != getattr(new, k)),
    )


class FileWatch:
    """Whether a file's content changed since the last look (a hash, not the mtime:
    a ConfigMap update swaps a symlink, and an editor may keep the mtime).

    The file is read and hashed only when its ``stat`` (device, inode, size, mtime, ctime;
    symlinks followed) differs from the one taken at the last hash, or when that last
    change is less than ``settle`` seconds old (two writes within one timestamp tick
    could share a stat): a daemon with 5,000 credentials otherwise hashed its 1.3 MB
    configuration every second, most of its idle CPU."""

    def __init__(
        self, path: Path | None, *, settle: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = path
        self._settle = settle
        self._clock = clock
        self._stamp: tuple[int, int, int, int, int] | None = None
        self._digest = self._read()

    def _stat(self) -> tuple[int, int, int, int, int] | None:
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _read(self) -> str | None:
        if self._path is None:
            return None
        stamp = self._stat()  # before the read: a write in between shows next time
        try:
            digest = hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            return None  # missing for a moment during an update: look again next poll
        self._stamp = stamp
        return digest

    def _untouched(self) -> bool:
        stamp = self._stat()
        if stamp is None or stamp != self._stamp:
            return False
        last_change = max(stamp[3], stamp[4]) / 1e9
        return self._clock() - last_change > self._settle

    def changed(self) -> bool:
        if self._path is None or self._untouched():
            return False
        digest = self._read()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return True


class Reloader:
    """Called on the daemon's poll loop: reloads on SIGHUP or a changed config file."""

    def __init__(
        self,
        app: App,
        daemon: Daemon,
        *,
        load: Callable[[], Settings],
        path: Path | None,
        on_apply: Callable[[Plan], None] | None = None,
    ) -> None:
        self._app = app
        self._daemon = daemon
        self._load = load
        self._watch = FileWatch(path)
        self._on_apply = on_apply
        self.requested = threading.Event()  # set by the SIGHUP handler

    def poll(self) -> None:
        changed = self._watch.changed()
        if self.requested.is_set() or changed:
            self.requested.clear()
            self.reload("SIGHUP" if not changed else "config file changed")

    def reload(self, why: str) -> Plan | None:
        """Apply the configuration as it is now; None when it was refused."""
        app = self._app
        record = getattr(app.observer, "reload", None)
        try:
            settings = self._load()
            diff = plan(app.settings, settings)
            fresh = {c.name: c for c in settings.credentials}
            starting = [fresh[n] for n in (*diff.changed, *diff.added)]
            for name in diff.changed:
                app.forget(name)
            rotators = [app.rotator(cred) for cred in starting]
        except RotatorError as exc:
            log.error("reload refused (%s), keeping the running configuration: %s", why, exc)
            if record is not None:
                record("refused")
            return None
        if diff.needs_restart:
            log.warning(
                "reload: %s changed; this takes a restart (kept as running)",
                ", ".join(diff.needs_restart),
            )
        if diff.is_empty:
            app.settings = settings  # e.g. readiness_margin_seconds
            log.info("reload (%s): no credential changed", why)
            if record is not None:
                record("unchanged")
            return diff
        for name in diff.removed:
            app.forget(name)
        app.restart_chains(self._daemon, starting, rotators, (*diff.removed, *diff.changed))
        app.settings = settings
        if self._on_apply is not None:
            self._on_apply(diff)
        log.info("configuration reloaded (%s) %s", why, diff.describe())
        if record is not None:
            record("applied")
        return diff

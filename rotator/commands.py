"""What each CLI verb does, given a built App. Returns exit codes; prints only
what the verb is for (stdout), everything else goes to the log (stderr)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from rotator.app import App
from rotator.clock import format_instant
from rotator.config import Credential
from rotator.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    RotatorError,
)
from rotator.retry import call_with_retries
from rotator.rotation import CredentialRotator, describe_error, missed_run_advice
from rotator.stores.batch import seed_batched
from rotator.stores.quota import versions_line, write_rate_advice
from rotator.token import Token

log = logging.getLogger("rotator")

_SEVERITY = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_USAGE: 2, EXIT_REJECTED: 3}


def worst(codes: Iterable[int]) -> int:
    """The exit code of several results: rejected > usage > failed > ok."""
    return max(codes, key=lambda c: _SEVERITY.get(c, 1), default=EXIT_OK)


def exit_code_of(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, RotatorError) else EXIT_FAILED


# ---------------------------------------------------------------- once


def once(app: App, *, force: bool = False, interval: float | None = None) -> int:
    """Rotate what is due. `interval` (seconds until the next cron run) makes a token
    that would be too close to expiry by then count as due now."""
    horizon = timedelta(seconds=interval or 0)
    _install_signal_handlers(app.stop_event)  # SIGTERM: finish the publish, skip back-offs
    sweep_file_targets(app)
    codes = [
        _once_one(app, cred, force=force, horizon=horizon) for cred in app.settings.credentials
    ]
    return worst(codes)


def sweep_file_targets(app: App) -> None:
    """Remove temp files that killed writers left beside the file targets: once at
    start-up, one listing per folder (a write never lists the folder)."""
    paths = [Path(t.ref) for c in app.settings.credentials for t in c.targets if t.type == "file"]
    if paths:
        from rotator.stores.file import sweep_temp_files

        sweep_temp_files(paths)


def _once_one(app: App, credential: Credential, *, force: bool, horizon: timedelta) -> int:
    try:
        rotator = app.rotator(credential)
        result = _with_retries(
            app, credential, rotator, lambda: rotator.rotate(force=force, horizon=horizon)
        )
    except RotatorError as exc:
        log.error("rotation failed credential=%s error=%s", credential.name, exc)
        return exc.exit_code
    next_at = rotator.next_run_at()
    held = worst(h.exit_code for h in rotator.held.values())  # each logged by the rotator
    log.info(
        "%s credential=%s expires_at=%s next_due=%s",
        "fresh, nothing to do" if result.action == "adopted" else result.action,
        credential.name,
        format_instant(result.token.expires_at),
        format_instant(next_at) if next_at else "-",
    )
    advice = write_rate_advice(credential, result.token)
    if advice and not rotator.held:
        log.warning("%s", advice)
    schedule = missed_run_advice(rotator.schedule, result.token.lifetime, horizon)
    if schedule:
        log.warning("credential=%s %s", credential.name, schedule)
    return held


def _with_retries(
    app: App, credential: Credential, rotator: CredentialRotator, fn: Callable[[], Any]
) -> Any:
    def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
        app.observer.retry(credential.name, exc)
        log.warning(
            "attempt %d failed credential=%s error=%s retry_in=%.1fs",
            attempt,
            credential.name,
            describe_error(exc),
            wait,
        )

    return call_with_retries(
        fn,
        backoff=app.backoff(credential).capped(rotator.lifetime()),
        clock=app.clock,
        budget=timedelta(seconds=credential.refresh.retry_budget_seconds),
        stop_event=app.stop_event,
        on_retry=on_retry,
    )


# ---------------------------------------------------------------- get


def get(app: App, *, credential: str | None, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cred = app.settings.credential(credential)
    store = app.store(cred.targets[0], cred)
    reading = store.get()
    if reading.is_missing:
        log.error("no token published credential=%s target=%s", cred.name, store.name)
        return EXIT_FAILED
    if reading.problem:
        log.error(
            "published token is unreadable credential=%s target=%s problem=%s",
            cred.name,
            store.name,
            reading.problem,
        )
        return EXIT_FAILED
    token = reading.token
    if token is None:  # an opaque raw token: its expiry cannot be known
        if as_json:
            log.error("target %s holds a raw opaque token: no document to show", store.name)
            return EXIT_FAILED
        out.write((reading.value or "") + "\n")
        return EXIT_OK
    now = app.clock.now()
    if token.is_expired(now):
        log.error(
            "published token expired credential=%s target=%s expires_at=%s",
            cred.name,
            store.name,
            format_instant(token.expires_at),
        )
        return EXIT_FAILED
    if as_json:
        out.write(json.dumps(token.to_document()) + "\n")
    else:
        out.write(token.access_token + "\n")
    return EXIT_OK


# ---------------------------------------------------------------- check


def check(app: App, *, out: TextIO | None = None, interval: float | None = None) -> int:
    """`interval`: the cron interval of `once`; say whether it survives a missed run."""
    out = out or sys.stdout
    _install_signal_handlers(app.stop_event)
    lifetimes: dict[str, float] = {}
    codes = [_check_one(app, cred, out, interval, lifetimes) for cred in app.settings.credentials]
    for line in app.capacity(lifetimes):
        out.write(f"capacity: {line}\n")
    return worst(codes)


def _check_one(
    app: App, cred: Credential, out: TextIO, interval: float | None, lifetimes: dict[str, float]
) -> int:
    def say(step: str, outcome: str) -> None:
        out.write(f"{cred.name}: {step}: {outcome}\n")
        out.flush()

    say("config", f"ok ({app.settings.source})")
    auth_method = cred.require_client().auth_method
    say("auth method", auth_method)
    if auth_method == "private_key_jwt":
        step, what = "private key", _describe_key
    else:
        step, what = "client secret", _describe_secret
    try:
        detail = what(app, cred)
    except RotatorError as exc:
        say(step, f"FAILED: {exc}")
        return exc.exit_code
    say(step, f"ok ({detail})")
    client = app.token_client(cred)
    rotator = app.rotator(cred)
    try:
        grant = _with_retries(app, cred, rotator, client.client_credentials)
    except RotatorError as exc:
        say("token endpoint", f"FAILED: {exc}")
        return exc.exit_code
    token = grant.token
    lifetimes[cred.name] = token.lifetime.total_seconds()
    say(
        "token endpoint",
        f"ok (expires_in={token.lifetime.total_seconds():.0f}s, "
        f"refresh_token={'yes' if grant.refresh_token else 'no'})",
    )
    code = EXIT_OK
    verify = app.verifier(cred)
    if verify is not None:
        try:
            _with_retries(app, cred, rotator, lambda: verify(token))
            say("verify_url", "ok")
        except RotatorError as exc:
            say("verify_url", f"FAILED: {exc}")
            code = worst([code, exc.exit_code])
    for store in rotator.stores:
        held = rotator.would_hold(store.name, token)
        if held is not None:
            say(f"target {store.name}", f"REFUSED: {held.reason}")
            code = worst([code, held.exit_code])
            continue
        try:
            store.ping()
            versions = versions_line(store, app.clock.now())
            say(f"target {store.name}", f"ok ({versions})" if versions else "ok")
        except RotatorError as exc:
            say(f"target {store.name}", f"FAILED: {exc}")
            code = worst([code, exc.exit_code])
    advice = write_rate_advice(cred, token)
    if advice and code == EXIT_OK:
        say("advice", advice)
    say("cron schedule", _schedule_verdict(rotator, token, interval))
    return code


def _schedule_verdict(rotator: CredentialRotator, token: Token, interval: float | None) -> str:
    """A warning, never a failure: the daemon needs no schedule at all."""
    schedule, lifetime = rotator.schedule, token.lifetime
    if interval:
        warning = missed_run_advice(schedule, lifetime, timedelta(seconds=interval))
        if warning:
            return f"WARNING: {warning}"
        return (
            f"ok (once --interval {interval:g} survives a missed run of a "
            f"{lifetime.total_seconds():g}s token)"
        )
    longest = schedule.longest_interval(lifetime).total_seconds()
    return (
        f"once --interval {longest:g} or less survives a missed run of a "
        f"{lifetime.total_seconds():g}s token (pass --interval to check yours)"
    )


def _describe_secret(app: App, cred: Credential) -> str:
    app.secret(cred).get()
    source = cred.require_client().secret_source
    return source.kind if source else "-"


def _describe_key(app: App, cred: Credential) -> str:
    """The key's source, algorithm, kid and RFC 7638 thumbprint: never the key."""
    provider = app.signing_key(cred)
    key = provider.get()
    kid = f", kid {key.kid}" if key.kid else ""
    return f"{provider.source.kind}, {key.alg}{kid}, JWK thumbprint SHA-256 {key.thumbprint}"


# ---------------------------------------------------------------- run


def run(
    app: App,
    *,
    load: Callable[[], Any] | None = None,
    config_path: str | None = None,
) -> int:
    """The daemon. `load` re-reads the configuration on SIGHUP or when the file at
    `config_path` changes (see rotator.reload)."""
    from pathlib import Path

    from rotator.reload import Plan, Reloader

    settings = app.settings
    sweep_file_targets(app)
    rotators = [app.rotator(cred) for cred in settings.credentials]
    seed_batched(rotators)
    for rotator in rotators:
        rotator.spread_first_refresh()  # a fleet fetched together must not refresh together
    daemon = app.daemon(rotators)
    register = getattr(app.observer, "register", None)
    forget = getattr(app.observer, "forget", None)
    if register is not None:
        for cred in settings.credentials:
            register(cred.name)

    def on_apply(plan: Plan) -> None:
        for name in plan.removed:
            if forget is not None:
                forget(name)
        for name in plan.added:
            if register is not None:
                register(name)

    if load is not None:
        reloader = Reloader(
            app,
            daemon,
            load=load,
            path=Path(config_path) if config_path else None,
            on_apply=on_apply,
        )
        daemon.set_poll(reloader.poll)
        _install_reload_handler(reloader.requested)
    _install_signal_handlers(app.stop_event)
    server = app.health_server(daemon)
    if server is not None:
        server.start()
        log.info(
            "metrics and health on port %d (/metrics, /healthz, /readyz) address=%s",
            server.port,
            settings.metrics_address,
        )
    log.info(
        "daemon started credentials=%d targets=%d",
        len(rotators),
        sum(len(r.stores) for r in rotators),
    )
    try:
        daemon.run_until_stopped()
    finally:
        if server is not None:
            server.stop()
    log.info("daemon stopped")
    return EXIT_OK


def _install_reload_handler(requested: threading.Event) -> None:
    """SIGHUP asks the daemon's poll loop to reload the configuration."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        requested.set()

    signal.signal(signal.SIGHUP, handler)


def _install_signal_handlers(event: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, finishing in-flight work", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

"""``python -m rotator.testing.keycloak``: run a Keycloak stub until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from rotator.testing.keycloak import KeycloakStub

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a stub until Ctrl-C or SIGTERM, printing its token URL on the first stdout line."""
    parser = argparse.ArgumentParser(
        prog="python -m rotator.testing.keycloak",
        description="Keycloak-like OAuth2 token endpoint stub (client secret from the "
        "STUB_CLIENT_SECRET environment variable, default oms-secret).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--realm", default="astore-p2p")
    parser.add_argument("--client-id", default="oms-client")
    parser.add_argument("--lifespan", type=float, default=300.0, help="access token seconds")
    parser.add_argument(
        "--refresh", action="store_true", help="issue refresh tokens for client_credentials"
    )
    parser.add_argument("--refresh-lifespan", type=float, default=1800.0)
    parser.add_argument("--no-auth-prefix", action="store_true", help="serve /realms/...")
    parser.add_argument("--legacy-errors", action="store_true")
    args = parser.parse_args(argv)

    secret = os.environ.get("STUB_CLIENT_SECRET", "oms-secret")
    stub = KeycloakStub(
        clients={args.client_id: secret},
        realm=args.realm,
        host=args.host,
        port=args.port,
        access_token_lifespan=args.lifespan,
        use_refresh_tokens=args.refresh,
        refresh_token_lifespan=args.refresh_lifespan,
        auth_prefix=not args.no_auth_prefix,
        legacy_errors=args.legacy_errors,
    )
    done = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        done.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    stub.start()
    try:
        sys.stdout.write(stub.token_url + "\n")
        sys.stdout.flush()
        sys.stderr.write(
            f"Keycloak stub: realm {args.realm}, client {args.client_id}, "
            f"lifespan {args.lifespan:g}s, refresh tokens {'on' if args.refresh else 'off'}, "
            f"protected resource {stub.verify_url} (Ctrl-C to stop)\n"
        )
        sys.stderr.flush()
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    finally:
        stub.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0

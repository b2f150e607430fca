"""Argument parsing and exit codes only: ``main(argv) -> int``.

Exit codes: 0 success (rotated, or still fresh); 1 failed after retries, or
verify_url refused the new token; 2 usage or configuration error; 3 the token
endpoint rejected the client credentials.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from rotator import __version__
from rotator.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, RotatorError

if TYPE_CHECKING:
    from rotator.app import App
    from rotator.config import Process

log = logging.getLogger("rotator")

EPILOG = """exit codes: 0 success (rotated, or still fresh); 1 failed after retries, or
verify_url refused the new token; 2 usage or configuration error; 3 the token
endpoint rejected the client credentials. The client secret and the private key
are never taken on the command line: see client_secret_env / _file /
_secretsmanager / _ssm and private_key_env / _file / _secretsmanager / _ssm, or
ROTATOR_CLIENT_SECRET / ROTATOR_CLIENT_SECRET_FILE / ROTATOR_PRIVATE_KEY_FILE."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if "invalid choice:" in message:
            # `rotator SECRET` must not echo SECRET: name the choices, not the value
            head, _, tail = message.partition("invalid choice:")
            choices = tail[tail.find("(choose from") :] if "(choose from" in tail else ""
            message = f"{head}invalid choice {choices}".rstrip()
        if message.startswith("unrecognized arguments:"):
            # never echo values: a mistaken `--client-secret VALUE` must not reach a log
            words = message.split(":", 1)[1].split()
            names = [w.split("=", 1)[0] for w in words if w.startswith("-")]
            message = "unrecognized arguments: " + (" ".join(names) or "(values not shown)")
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _common(defaults: bool) -> _Parser:
    """Options accepted before or after the subcommand."""
    parser = _Parser(add_help=False)
    suppress = argparse.SUPPRESS
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None if defaults else suppress,
        help="TOML config file (default: $ROTATOR_CONFIG, else ROTATOR_* variables)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None if defaults else suppress,
        help="log level (default: $ROTATOR_LOG_LEVEL or info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None if defaults else suppress,
        help="log format (default: $ROTATOR_LOG_FORMAT or text)",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rotator",
        description="Keep a short-lived OAuth2 access token fresh in AWS Secrets Manager / SSM.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common(True)],
    )
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _common(False)

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics, /healthz and /readyz on PORT (default: off)",
    )
    once = sub.add_parser(
        "once", parents=[common], help="rotate every credential that is due, then exit"
    )
    once.add_argument("--force", action="store_true", help="rotate even if the token is fresh")
    once.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds until the next scheduled run (cron interval): rotate now if the token "
        "would otherwise get within the safety margin of expiry before then "
        "(default: $ROTATOR_ONCE_INTERVAL, else only what is due now)",
    )
    get = sub.add_parser("get", parents=[common], help="print the published access token")
    get.add_argument("--credential", metavar="NAME", help="which credential (default: the first)")
    get.add_argument("--json", action="store_true", help="print the whole published document")
    check = sub.add_parser(
        "check",
        parents=[common],
        help="validate config, secret, token endpoint, verify_url and targets; publish nothing",
    )
    check.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the cron interval you run `once` at: say whether it survives a missed run of "
        "the token's lifetime (default: $ROTATOR_ONCE_INTERVAL)",
    )
    keygen = sub.add_parser(
        "keygen",
        parents=[common],
        help="write a new private key for private_key_jwt and print its public JWKS",
    )
    keygen.add_argument(
        "--out", required=True, metavar="PATH", help="private key file to create (mode 0600)"
    )
    keygen.add_argument(
        "--alg", choices=("RS256", "ES256", "PS256"), default="RS256", help="(default: RS256)"
    )
    keygen.add_argument("--kid", default=None, help="key id (default: the RFC 7638 thumbprint)")
    keygen.add_argument(
        "--public-out", metavar="PATH", default=None, help="also write the public key PEM here"
    )
    status = sub.add_parser(
        "status", parents=[common], help="show every credential's published token"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The CLI; `env` is the environment to read (None: the process's)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    from rotator import config, logs

    environ = config.environ(env)
    try:
        process = config.process_settings(
            environ, config_path=args.config, log_level=args.log_level, log_format=args.log_format
        )
    except ConfigError as exc:
        sys.stderr.write(f"rotator: error: {exc}\n")
        return EXIT_USAGE
    logs.setup(process.log_level, process.log_format)
    try:
        return VERBS[args.command](args, process, environ)
    except RotatorError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK if args.command == "run" else EXIT_FAILED
    except Exception as exc:  # never a traceback to a user
        log.error("internal error: %s (run with --log-level debug for details)", type(exc).__name__)
        log.debug("internal error detail", exc_info=exc)
        return EXIT_FAILED


def _app(args: argparse.Namespace, env: Mapping[str, str], *, consumer: bool = False) -> App:
    """Load the configuration and build the App (a consumer needs no token client)."""
    from rotator import config
    from rotator.app import build

    settings = config.load(args.config, env, require_client=not consumer)
    return build(settings, env=env)


def _once(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from rotator import commands, config

    app = _app(args, env)
    return commands.once(app, force=args.force, interval=config.once_interval(env, args.interval))


def _get(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from rotator import commands

    app = _app(args, env, consumer=True)
    return commands.get(app, credential=args.credential, as_json=args.json)


def _check(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from rotator import commands, config

    app = _app(args, env)
    return commands.check(app, interval=config.once_interval(env, args.interval))


def _status(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from rotator.status import status

    return status(_app(args, env, consumer=True), as_json=args.json)


def _run(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from rotator import commands, config
    from rotator.app import build

    settings = config.load(args.config, env)
    app = build(settings, env=env, daemon=True, metrics_port=args.metrics_port)
    return commands.run(
        app, load=lambda: config.load(args.config, env), config_path=process.config_path
    )


def _keygen(args: argparse.Namespace, process: Process, env: Mapping[str, str]) -> int:
    from pathlib import Path

    from rotator.keygen import keygen

    public_out = Path(args.public_out) if args.public_out else None
    key, jwks = keygen(Path(args.out), alg=args.alg, kid=args.kid, public_out=public_out)
    sys.stdout.write(jwks + "\n")
    log.info(
        "wrote %s (mode 0600) thumbprint=%s; register the JWKS above at the server, then "
        'configure auth_method = "private_key_jwt", private_key_file = "%s", '
        'private_key_id = "%s", signing_alg = "%s"',
        args.out,
        key.thumbprint,
        args.out,
        key.kid,
        key.alg,
    )
    return EXIT_OK


def console_main() -> None:
    sys.exit(main())


Verb = Callable[[argparse.Namespace, "Process", Mapping[str, str]], int]

# The verbs: each loads what it needs, builds through rotator.app and runs its command.
VERBS: dict[str, Verb] = {
    "run": _run,
    "once": _once,
    "get": _get,
    "check": _check,
    "keygen": _keygen,
    "status": _status,
}

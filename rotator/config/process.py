"""Process-level settings of one CLI run: a command-line flag wins over its ROTATOR_*
variable, which wins over the default. (Metrics port and address and the worker
count are in Settings: a TOML file may set them too.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from rotator.errors import ConfigError

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)


@dataclass(frozen=True)
class Process:
    config_path: str | None = None  # --config, else ROTATOR_CONFIG (None: the environment)
    log_level: LogLevel = "info"  # --log-level, else ROTATOR_LOG_LEVEL
    log_format: LogFormat = "text"  # --log-format, else ROTATOR_LOG_FORMAT


def process_settings(
    env: Mapping[str, str],
    *,
    config_path: str | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
) -> Process:
    """The flags given (None: not given) over the environment. Checked before logging
    is set up, so the error is one plain line."""
    level = log_level or env.get("ROTATOR_LOG_LEVEL", "info").lower()
    fmt = log_format or env.get("ROTATOR_LOG_FORMAT", "text").lower()
    levels = [x for x in LOG_LEVELS if x == level]
    formats = [x for x in LOG_FORMATS if x == fmt]
    if not levels or not formats:
        raise ConfigError(
            f"ROTATOR_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} and "
            f"ROTATOR_LOG_FORMAT one of {', '.join(LOG_FORMATS)}"
        )
    return Process(config_path or env.get("ROTATOR_CONFIG") or None, levels[0], formats[0])


def once_interval(env: Mapping[str, str], flag: float | None) -> float | None:
    """`once` and `check`: --interval, else ROTATOR_ONCE_INTERVAL (read only by them)."""
    interval = flag
    raw = env.get("ROTATOR_ONCE_INTERVAL")
    if interval is None and raw:
        try:
            interval = float(raw)
        except ValueError as exc:
            raise ConfigError(
                f"ROTATOR_ONCE_INTERVAL must be a number of seconds: {raw!r}"
            ) from exc
    if interval is not None and not interval >= 0:
        raise ConfigError(f"--interval must be >= 0 seconds: {interval!r}")
    return interval

"""``rotator run`` through rotator's own composition root, plus a record of planned starts.

This is what the ``run`` command does (``config.load`` -> ``app.build`` -> ``commands.run``,
text logs at info) minus argument parsing, with one addition through the composition
root's observer seam: every planned start is appended to ``--plans`` as
``<credential> <unix time>`` with full precision (the log line rounds ``next_run`` to
whole seconds, too coarse to measure a scheduling lag). One small unbuffered write per
schedule: no memory grows with it.

    python -m tests.bench.daemon_main --config rotator.toml --plans plans.txt
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from rotator import commands, config, logs
from rotator.app import build
from rotator.rotation import NullObserver


class PlanLog(NullObserver):
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def scheduled(self, credential: str, at: datetime) -> None:
        os.write(self._fd, f"{credential} {at.timestamp():.6f}\n".encode())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.daemon_main")
    parser.add_argument("--config", required=True)
    parser.add_argument("--plans", required=True)
    args = parser.parse_args(argv)
    logs.setup("info", "text")
    settings = config.load(args.config)
    app = build(settings, observer=PlanLog(args.plans))
    return commands.run(app)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m tests.bench.moto_main -H 127.0.0.1 -p PORT``: moto's server, minus one cost.

moto's server finds the backend of every request by listing its own package directory
(``moto.backends.list_of_moto_modules``: ``os.listdir`` plus an ``isdir`` per entry, under
the dispatcher's global lock). Profiled with py-spy while 2,000 PutParameter and 200
GetParameters went through it, that listing was ~20 % of the server's CPU: at thousands of
credentials the moto server, not rotator, would set the pace. The listing never changes
while the server runs, so it is taken once here; everything else is moto as it ships.
"""

from __future__ import annotations

from collections.abc import Iterable

import moto.backends as backends
from moto.server import main

_MODULES = tuple(backends.list_of_moto_modules())


def _listed() -> Iterable[str]:
    return _MODULES


backends.list_of_moto_modules = _listed

if __name__ == "__main__":
    main()

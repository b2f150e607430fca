"""5. Consumer reads: what a cached ``TokenReader.token()`` costs, and how many store
calls 10,000 consumer requests make.

The store calls are counted by a FaultProxy (no faults) in front of moto, by
X-Amz-Target: the reader talks to Secrets Manager through it, the publisher directly.
Time is a fake clock shared by publisher and reader, so hours of traffic take seconds:
a rotator publishes 300 s tokens on its schedule while the consumer makes 10,000
requests at a steady rate.
"""

from __future__ import annotations

import shutil
import statistics
import time
import timeit
from typing import Any

from rotator.clock import SystemClock
from rotator.reader import TokenReader
from rotator.rotation import CredentialRotator
from rotator.stores.base import TokenStore
from rotator.stores.file import FileStore
from rotator.stores.secretsmanager import SecretsManagerStore
from rotator.stores.ssm import SsmStore
from rotator.testing.proxy import FaultProxy
from tests.bench.peers import SCRATCH, MotoProcess, aws_client
from tests.bench.sections.reader import CachedCost, ReaderResult, StoreCalls
from tests.fakes import FakeClock, FakeFetcher

REQUESTS = 10_000
RATES = (1.0, 10.0, 100.0)  # consumer requests per second
LIFETIME = 300.0


def _cached_cost(reader: TokenReader) -> CachedCost:
    reader.token()  # fill the cache
    per_call = [t / 100_000 for t in timeit.repeat(reader.token, number=100_000, repeat=5)]
    return CachedCost(us=min(per_call) * 1e6, median_us=statistics.median(per_call) * 1e6)


def _reread_ms(reader: TokenReader, n: int = 30) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        reader.refresh()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples[3:]) * 1000


def _publish(clock: Any, store: Any) -> CredentialRotator:
    rotator = CredentialRotator(
        "bench", fetcher=FakeFetcher(clock, lifetime=LIFETIME), stores=[store], clock=clock
    )
    rotator.rotate(force=True)
    return rotator


def store_calls(endpoint: str, rate: float) -> StoreCalls:
    """10,000 requests at ``rate``/s against SM; store calls counted by the proxy."""
    clock = FakeClock()
    secret_id = f"bench/reader/{int(rate)}"
    publisher = _publish(
        clock, SecretsManagerStore(aws_client("secretsmanager", endpoint), secret_id, create=True)
    )
    with FaultProxy(endpoint) as proxy:
        reader = TokenReader(
            SecretsManagerStore(aws_client("secretsmanager", proxy.url), secret_id), clock=clock
        )
        next_run = publisher.next_run_at()
        rotations = 0
        for _ in range(REQUESTS):
            clock.advance(1.0 / rate)
            if next_run is not None and clock.now() >= next_run:
                publisher.rotate()
                rotations += 1
                next_run = publisher.next_run_at()
            reader.token()
        calls = proxy.count(target="GetSecretValue")
    return StoreCalls(
        rate_per_s=rate,
        span_s=REQUESTS / rate,
        store_calls=calls,
        reader_reads=reader.reads,
        rotations=rotations,
    )


def run(moto: MotoProcess, *, quick: bool = False) -> ReaderResult:
    moto.reset()
    clock = FakeClock()
    sm_client = aws_client("secretsmanager", moto.endpoint)
    ssm_client = aws_client("ssm", moto.endpoint)
    SCRATCH.mkdir(exist_ok=True)
    workdir = SCRATCH / "reader"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    path = workdir / "token.json"
    stores: dict[str, TokenStore] = {
        "secretsmanager": SecretsManagerStore(sm_client, "bench/reader", create=True),
        "ssm": SsmStore(ssm_client, "/bench/reader"),
        "file": FileStore(path),
    }
    for store in stores.values():
        _publish(clock, store)
    cached: dict[str, CachedCost] = {}
    reread: dict[str, float] = {}
    for kind, store in stores.items():
        reader = TokenReader(store, clock=clock)
        cached[kind] = _cached_cost(reader)
        reread[kind] = _reread_ms(reader)
    # the real clock costs a little more than the fake one: show it too
    live = path.with_name("live.json")
    _publish(SystemClock(), FileStore(live))
    system_reader = TokenReader(FileStore(live))
    rates = RATES[1:] if quick else RATES
    return ReaderResult(
        cached=cached,
        cached_system_clock=_cached_cost(system_reader),
        reread_ms=reread,
        per_10k=tuple(store_calls(moto.endpoint, rate) for rate in rates),
        lifetime_s=LIFETIME,
    )

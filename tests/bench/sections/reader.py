"""5. Consumer reads: the result of ``bench_reader.run`` and its section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tests.bench.section import num, table


@dataclass(frozen=True)
class CachedCost:
    us: float  # best of 5 x 100,000 calls
    median_us: float


@dataclass(frozen=True)
class StoreCalls:
    """10,000 consumer requests at one rate, store calls counted by the proxy."""

    rate_per_s: float
    span_s: float
    store_calls: int
    reader_reads: int
    rotations: int


@dataclass(frozen=True)
class ReaderResult:
    cached: dict[str, CachedCost]  # by store, fake clock
    cached_system_clock: CachedCost
    reread_ms: dict[str, float]  # a cache miss, by store
    per_10k: tuple[StoreCalls, ...]
    lifetime_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        fake = ", ".join(f"{k} {num(v.us, 2)} µs" for k, v in self.cached.items())
        miss = ", ".join(f"{k} {num(v, 2)} ms" for k, v in self.reread_ms.items())
        rows = [
            [
                f"{x.rate_per_s:g}/s",
                f"{num(x.span_s, 0)} s",
                str(x.rotations),
                str(x.store_calls),
                "10,000",
            ]
            for x in self.per_10k
        ]
        head = ["request rate", "span", "rotations meanwhile", "store calls"]
        return "\n".join(
            [
                "## 5. Consumer reads",
                "",
                f"`TokenReader.token()` from cache: {num(self.cached_system_clock.us, 2)} µs "
                f"per call with the system clock (best of 5 x 100,000 calls; {fake} with a "
                "fake clock, so the clock read is most of it). A cache miss (re-read of the "
                f"store) costs {miss} here.",
                "",
                "Store calls per 10,000 consumer requests, counted by a FaultProxy in front of "
                f"moto (GetSecretValue), while a rotator publishes {self.lifetime_s:g} s tokens "
                "on its schedule (fake clock, so hours pass in seconds):",
                "",
                *table([*head, "naive (read per request)"], rows),
                "",
                "The reader keeps a token until 30 s before it expires, so it reads about once "
                "per rotation whatever the request rate.",
                "",
            ]
        )

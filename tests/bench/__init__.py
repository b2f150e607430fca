"""`make bench`: what rotator costs, measured against the floor and the usual alternative.

Everything runs on 127.0.0.1: the Keycloak-compatible ``KeycloakStub`` and a moto
server in its own process. ``python -m tests.bench.run`` prints a table and writes
``BENCHMARKS.md`` and ``tests/bench/chart.png``. The modules report figures; nothing
here asserts on timing. Files are named ``bench_*.py`` so pytest never collects them.
"""

"""`make bench`: what rotator costs, measured against the floor and the usual alternative.

Everything runs on 127.0.0.1: the Keycloak-compatible ``KeycloakStub`` and a moto
server in its own process. ``python -m tests.bench.run`` prints the targets and writes
``BENCHMARKS.md`` and the charts. Each ``bench_*.py`` measures and returns a typed result
that renders its own section (``section.py``, ``sections/``); ``report.py`` assembles
them. Nothing here asserts on timing. Files are named ``bench_*.py`` so pytest never
collects them.
"""

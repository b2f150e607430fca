"""One module per section of BENCHMARKS.md: the bench's frozen result type and how it
renders (``markdown()``, ``to_json()``, and ``goals()`` where it has targets). The
``bench_*.py`` modules measure and return these; see ``tests/bench/section.py``."""

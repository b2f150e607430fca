"""The integration-test harness: one of each thing the integration tests need.

* ``env``: ``rotator_env(aws, **extra)``, the one allow-listed subprocess environment.
* ``process``: ``run_cli``/``Result``, ``run_once``/``Completed``, ``Daemon`` (output to
  files), ``RotatorProcess`` (log lines in memory, ``wait_for``), ``wait_until``.
* ``config``: ``write_config``/``credential`` and the usual targets.
* ``watch``: ``StoreWatcher``, one store read as a consumer reads it, checked afterwards.
* ``history``: ``HistoryWatcher``, several stores at once, with consumer-visible invariants.
* ``schedule``: the daemon's planned waits and runs, from its log (no wall-clock windows).
* ``probes``: the health and metrics pages.

The factories (token stub, fault proxy, background process) are fixtures in
``tests/integration/conftest.py``; moto is ``tests/fixtures/aws.py``. The older
``tests/fixtures/procs.py`` and ``tests/fixtures/faults.py`` re-export from here.
"""

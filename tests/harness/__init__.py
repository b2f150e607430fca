"""The integration-test harness: one of each thing the integration tests need.

* ``env``: ``rotator_env(aws, **extra)``, the one allow-listed subprocess environment.
* ``process``: ``run_cli``/``Result``, ``run_once``/``Completed``, ``Daemon`` (output to
  files), ``RotatorProcess`` (log lines in memory, ``wait_for``), ``wait_until``,
  ``wait_for_daemons``.
* ``config``: ``write_config``/``credential`` and the usual targets; the reload tests'
  ``file_credential``/``replace_config`` and the probing daemon's ``probe_vars``.
* ``poll``: ``Poller``, the one polling core of the three store watchers below (they
  differ only in what they keep and check).
* ``watch``: ``StoreWatcher``, one store read as a consumer reads it, checked afterwards.
* ``history``: ``HistoryWatcher``, several stores at once, with consumer-visible invariants.
* ``replicas``: ``Replicas``, N ``rotator run`` daemons over one store with a watcher (and
  the revocation round the replica tests share); per-period fetch counts, logged actions.
* ``cli``: the CLI tests' vocabulary, with ``ConsumerWatcher`` (dead tokens as seen).
* ``schedule``: the daemon's planned waits and runs, from its log (no wall-clock windows).
* ``probes``: the health and metrics pages; ``health``: the health tests' config and
  metrics parsing (``Daemon(metrics_port=...)`` serves the pages, ``Daemon.get``).
* ``crash``: the crash tests' three-store world and self-killing ``rotator once``.

The factories (token stub, fault proxy, background process, health-serving daemon) are fixtures in
``tests/integration/conftest.py``; moto is ``tests/fixtures/aws.py``. The older
``tests/fixtures/procs.py`` and ``tests/fixtures/faults.py`` re-export from here.
"""

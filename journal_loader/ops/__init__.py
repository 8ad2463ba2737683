"""Operations: metrics, progress, logs, end-of-run hooks, job folders and the worker fleet.

Everything here plugs into a run as a ``RunObserver`` (see ``journal_loader.runner``), so the
runner knows nothing of Prometheus, terminals or log formats:

* ``metrics.MetricsObserver``: Prometheus metrics in a registry of its own, served over HTTP
  during the run, written as a node_exporter textfile, or pushed to a pushgateway;
* ``progress.ProgressObserver``: a bar on a terminal, a log line every N seconds elsewhere;
* ``logs.LogSetup``: text or JSON lines carrying loader, source_id and run_id, size-based
  rotation, every line scrubbed of secrets;
* ``hooks.HooksObserver``: ``--on-success`` / ``--on-failure`` commands fed the summary JSON;
* ``jobs``: ``journal-loader jobs run DIR``;
* ``fleet``: ``journal-loader worker``, runs queued in the database; ``job_queue``: the
  queue itself (installing it, ``journal-loader submit``, listing jobs for ``status``);
* ``configcheck``: what ``journal-loader config check`` masks and refuses;
* ``observers``: ``ObserverGroup`` (several observers as one) and ``exit_code_of``;
* ``observer_options``: the matching options of ``journal-loader run`` and the factory that
  builds its observers from them; the CLI asks for both.

From Python: ``journal_loader.run(..., observers=[MetricsObserver("my_loader",
textfile="/var/lib/node_exporter/textfile_collector/my_loader.prom")])``.

May import: ``api``, ``audit``, the runner and every layer below; never the command line
(``cli``): the CLI imports ops, not the other way round (the layers: tests/test_layering.py).
"""

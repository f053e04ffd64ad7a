"""``slmctl bench``: benchmarks across runtimes, devices, quantizations and concurrent requests.

``session`` (one run, start to end: what the command calls), ``model`` (the data), ``matrix``
(configurations), ``runner`` (measuring, in process or isolated), ``concurrent`` (N requests at once,
``--concurrency``), ``stats`` (summaries), ``report`` (JSON/CSV/Markdown, and text through ``text``),
``plot`` (PNG), ``history``, ``gate`` (the regression check against a baseline).
"""

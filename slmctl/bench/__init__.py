"""``slmctl bench``: benchmarks across runtimes, devices and quantizations.

``model`` (the data), ``matrix`` (configurations), ``runner`` (measuring, in process or isolated),
``stats`` (summaries), ``report`` (JSON/CSV/Markdown/text), ``plot`` (PNG), ``history``, ``gate``
(the regression check against a baseline).
"""

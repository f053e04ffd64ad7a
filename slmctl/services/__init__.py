"""The services the CLI and the server both call: one module (or package) per job.

``pull`` (a catalog model or a source reference into the store), ``importer`` (local model files into
the store), ``create`` (a Modelfile into a model), ``resolve`` (which stored model a name given to
``run`` means, imported or pulled on first use), ``repair`` (``verify --repair``), ``modelinfo`` (what
``list`` and ``show`` report), ``diagnostics`` (the ``doctor`` report), ``server_client`` (a client of a
running ``serve``, for ``ps`` and ``stop``) and ``bench`` (benchmark runs, reports, history and the
regression gate).

A floor above the engine, the store, the sources, the catalog and the Modelfile language, below the
CLI and the server: nothing here imports :mod:`slmctl.cli` or :mod:`slmctl.server`.
"""

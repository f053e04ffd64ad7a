"""The downloader: one file over HTTP(S), resumable, verified, fast.

:mod:`.download` (:func:`~.download.download`, the entry point, and the single-stream mode),
:mod:`.job` (what to fetch and the steps both modes share), :mod:`.parallel` (Range parts on worker
threads), :mod:`.parts` (their layout and sidecar record), :mod:`.ordered_hash` (the sha256 that
follows the parts), :mod:`.rawget` (the fast path for bodies) and :mod:`.http` (the client,
response classification and retries, which the transports use too). It knows nothing of the
transports or the store: its file helpers are :mod:`slmctl.fileio`'s.
"""

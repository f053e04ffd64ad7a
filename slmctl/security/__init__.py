"""Access control and accountability for ``slmctl serve``: API keys with roles (:mod:`.keys`, and the
server's cached view of them in :mod:`.keyring`), the audit log (:mod:`.audit`) and the serve settings
that switch them on (:mod:`.config`: auth, TLS, audit destination, prompt logging).

A leaf layer: the standard library, filelock and :mod:`slmctl.errors`; no FastAPI, so the CLI's
``slmctl keys`` uses it without importing the server.
"""

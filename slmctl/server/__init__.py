"""``slmctl serve``: the HTTP server (FastAPI + uvicorn). Imported only by the ``serve`` command.

``app`` builds the application and its lifespan, ``serving`` is the protocol-neutral layer between the
routes and the engine's scheduler, ``streaming`` bridges generations to async NDJSON bodies, the
routers (``ollama_routes``, ``health``) stay thin, and ``errors`` maps the exception hierarchy to HTTP.
"""

"""Health routes: ``GET|HEAD /`` (Ollama's banner), ``/api/health`` and ``/livez`` (the process serves),
``/readyz`` (every ``--preload`` model is loaded and no queue is full; 503 with the reason otherwise)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"])
async def banner() -> Any:
    return PlainTextResponse("Ollama is running")


@router.api_route("/api/health", methods=["GET", "HEAD"])
@router.api_route("/livez", methods=["GET", "HEAD"])
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.api_route("/readyz", methods=["GET", "HEAD"])
async def ready(http: Request) -> Any:
    state = http.app.state
    reasons = []
    if state.draining:
        reasons.append("shutting down")
    missing = [name for name in state.preload if name not in state.preloaded]
    if missing:
        reasons.append(f"not loaded yet: {', '.join(missing)}")
    if state.preload_errors:
        reasons += [f"{name}: {error}" for name, error in state.preload_errors.items()]
    if state.serving.scheduler.busy():
        reasons.append("a model's queue is full")
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return {"status": "ready"}

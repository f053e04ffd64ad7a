"""Ollama's model-management routes: version, tags, show, ps, copy, delete, pull, create and blobs.

The same services as the CLI (store, pull, create); progress streams as Ollama's NDJSON status events.
Blobs uploaded through ``POST /api/blobs/sha256:...`` are checked against their digest and kept under
``$SLMCTL_HOME/uploads`` until ``/api/create`` names them in ``files``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from slmctl import __version__
from slmctl.errors import SlmctlError, UsageError
from slmctl.events import wire_handler
from slmctl.names import parse_model_ref
from slmctl.server.ollama_routes import serving_of
from slmctl.server.serving import Serving
from slmctl.server.streaming import ndjson_response
from slmctl.wire import ollama as wire

router = APIRouter()
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/api/tags")
async def tags(http: Request) -> dict[str, Any]:
    serving = serving_of(http)
    manifests = await serving.run(serving.engine.store.list)
    return {"models": [wire.tags_entry(m) for m in manifests]}


@router.post("/api/show")
async def show(body: wire.ModelBody, http: Request) -> dict[str, Any]:
    serving = serving_of(http)
    return await serving.run(lambda: wire.show_object(serving.engine, serving.manifest(body.model)))


def ps_models(serving: Serving) -> list[dict[str, Any]]:
    out = []
    for entry in serving.scheduler.loaded():
        try:
            manifest = serving.engine.store.get(parse_model_ref(entry.plan.model))
        except SlmctlError:
            continue  # deleted while loaded
        expires = None  # never (keep_alive < 0), or later than a date can say (a keep_alive of 10^15 s)
        if entry.expires_at is not None and entry.expires_at < wire.FOREVER.timestamp():
            expires = datetime.fromtimestamp(entry.expires_at, timezone.utc)
        size = entry.plan.size
        out.append(wire.ps_entry(manifest, size=size, size_vram=size if entry.runner.info.device != "cpu" else 0,
                                 expires_at=expires, context_length=entry.runner.info.context_length))
    return out


@router.get("/api/ps")
async def ps(http: Request) -> dict[str, Any]:
    serving = serving_of(http)
    return {"models": await serving.run(ps_models, serving)}


@router.post("/api/copy", response_class=Response, responses={200: {"description": "Copied (no body)"}})
async def copy(body: wire.CopyBody, http: Request) -> Response:
    serving = serving_of(http)
    store = serving.engine.store
    await serving.run(store.copy, parse_model_ref(body.source), parse_model_ref(body.destination))
    return Response(status_code=200)


@router.delete("/api/delete", response_class=Response, responses={200: {"description": "Deleted (no body)"}})
async def delete(body: wire.ModelBody, http: Request) -> Response:
    serving = serving_of(http)
    ref = parse_model_ref(body.model)
    await serving.run(serving.scheduler.unload, str(ref))
    await serving.run(serving.engine.store.remove, ref)
    return Response(status_code=200)


# -- long operations with progress ----------------------------------------------------------------
#: What pull and create answer: progress events as NDJSON ("stream": true, the default) or the last one as
#: JSON; 502 when a download fails (the network is down, the registry answers an error).
PROGRESS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Progress events (NDJSON when streaming), or the last one",
          "content": {"application/json": {"schema": {"type": "object"}},
                      "application/x-ndjson": {"schema": {"type": "string"}}}},
    502: {"description": "A download failed", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}},
}
async def progress_response(serving: Serving, stream: bool,
                            work: Callable[[Callable[[dict[str, Any]], None]], Any]) -> Any:
    """Run ``work(emit)`` on a thread; stream its events as NDJSON, or answer the last one."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("event", event))

    def run() -> None:
        try:
            work(emit)
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
        except BaseException as error:  # noqa: BLE001 - reported to the client
            loop.call_soon_threadsafe(queue.put_nowait, ("error", error))

    threading.Thread(target=run, name="progress", daemon=True).start()

    async def events() -> AsyncIterator[dict[str, Any]]:
        while True:
            kind, value = await queue.get()
            if kind == "event":
                yield value
            elif kind == "done":
                return
            else:
                raise value

    iterator = events()
    if not stream:
        last: dict[str, Any] = {"status": "success"}
        async for event in iterator:
            last = event
        return last
    first = await iterator.__anext__()  # errors before any progress keep their status code
    return ndjson_response([first], iterator)


@router.post("/api/pull", responses=PROGRESS_RESPONSES)
async def pull(body: wire.PullBody, http: Request) -> Any:
    from slmctl.services.pull import pull as pull_model

    serving = serving_of(http)

    def work(emit: Callable[[dict[str, Any]], None]) -> None:
        pull_model(serving.engine.store, serving.settings, body.model, env=serving.env,
                   on_event=wire_handler(emit), insecure=body.insecure)

    return await progress_response(serving, body.stream, work)


# -- blobs and create -----------------------------------------------------------------------------
def uploads_dir(serving: Serving) -> Path:
    return serving.settings.home / "uploads"


def upload_path(serving: Serving, digest: str) -> Path:
    match = _DIGEST.match(digest)
    if match is None:
        raise UsageError(f"invalid digest {digest!r}", "use sha256:<64 hex digits>")
    return uploads_dir(serving) / f"sha256-{match.group(1)}"


@router.head("/api/blobs/{digest}", response_class=Response,
             responses={200: {"description": "The blob is here"}, 404: {"description": "No such blob"}})
async def blob_exists(digest: str, http: Request) -> Response:
    path = upload_path(serving_of(http), digest)
    return Response(status_code=200 if path.is_file() else 404)


@router.post("/api/blobs/{digest}", response_class=Response,
             responses={200: {"description": "Already here"}, 201: {"description": "Uploaded"}})
async def blob_upload(digest: str, http: Request) -> Response:
    serving = serving_of(http)
    target = upload_path(serving, digest)
    if target.is_file():
        return Response(status_code=200)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = serving.engine.store.open_staging()
    with writer:
        async for block in http.stream():
            await serving.run(writer.write, block)
        staged = await serving.run(writer.finish)
    if staged.digest != "sha256:" + target.name.removeprefix("sha256-"):
        staged.discard()
        raise UsageError(f"digest mismatch: the uploaded data has digest {staged.digest}, not {digest}",
                         "upload the file again")
    os.replace(staged.tmp_path, target)
    return Response(status_code=201)


def modelfile_for(body: wire.CreateBody, folder: Path, serving: Serving) -> str:
    """The Modelfile text a create request describes (the legacy ``modelfile`` field, or the fields)."""
    from slmctl.modelfile import Message, Modelfile, format_modelfile

    for name, digest in {**(body.files or {}), **(body.adapters or {})}.items():
        source = upload_path(serving, digest)
        if not source.is_file():
            raise UsageError(f"blob {digest} for '{name}' was not uploaded", "POST it to /api/blobs/<digest> first")
        destination = (folder / name).resolve()
        if folder.resolve() not in destination.parents:
            raise UsageError(f"invalid file name {name!r}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)
    if body.modelfile:
        return body.modelfile
    if body.files:
        names = list(body.files)
        source = f"./{names[0]}" if len(names) == 1 else "."
    elif body.from_:
        source = body.from_
    else:
        raise UsageError("create needs 'from', 'files' or 'modelfile'", "name a base model in 'from'")
    licenses = [body.license] if isinstance(body.license, str) else list(body.license or [])
    modelfile = Modelfile(from_=source, parameters=dict(body.parameters or {}), system=body.system,
                          template=body.template, messages=[Message(m.role, m.content) for m in body.messages or []],
                          licenses=licenses, adapters=[f"./{name}" for name in body.adapters or {}])
    return format_modelfile(modelfile)


@router.post("/api/create", responses=PROGRESS_RESPONSES)
async def create(body: wire.CreateBody, http: Request) -> Any:
    from slmctl.services.create import BasePull, create_model

    serving = serving_of(http)
    uploads_dir(serving).mkdir(parents=True, exist_ok=True)

    def work(emit: Callable[[dict[str, Any]], None]) -> None:
        with tempfile.TemporaryDirectory(dir=uploads_dir(serving), prefix="create-") as tmp:
            folder = Path(tmp)
            (folder / "Modelfile").write_text(modelfile_for(body, folder, serving), encoding="utf-8")
            create_model(serving.engine, body.model, folder / "Modelfile", quantize=body.quantize,
                         progress=lambda message: emit(wire.status_event(message)),
                         pull=BasePull(serving.settings, serving.env, wire_handler(emit), False))
        emit(wire.status_event("success"))

    return await progress_response(serving, body.stream, work)


"""Which stored model a name given to ``slmctl run`` means: imported or pulled on first use.

In order:

1. a stored model of that name;
2. a file or folder: an explicit path (``./m.gguf``, ``../m``, ``/abs/m.gguf``, ``~/m.gguf``), or a bare
   name that is an existing ``.gguf`` file (``tiny.gguf``) or, with a ``/`` in it, an existing ONNX model
   folder (``models/phi-onnx``). It is imported on first use under its file name (``tiny.gguf`` ->
   ``tiny``), saying so (:func:`import_on_first_use`); later runs of the same path use that model while
   the file is unchanged (not modified since the import), and a changed file is imported again in its
   place. A name that belongs to a different model is never replaced: ``tiny-2``, ``tiny-3``, ... are
   used instead. An explicit path that does not exist, or is neither a GGUF file (by extension or
   magic) nor a folder that looks like an ONNX model, is a usage error;
3. anything else: a catalog alias or source reference, pulled on first use by
   :func:`slmctl.services.pull.ensure_model`, which also gives the "did you mean" of an unknown name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slmctl.errors import ModelNotFound, OperationFailed, UsageError
from slmctl.events import OnEvent
from slmctl.names import parse_model_ref
from slmctl.services.importer import default_name, new_manifest, prepare_path
from slmctl.settings import Settings
from slmctl.store import Manifest, ModelStore

__all__ = ["import_on_first_use", "local_model_path", "resolve_model"]

#: How many ``name-N`` variants of a taken name are tried before giving up.
MAX_SUFFIX = 9


def resolve_model(store: ModelStore, settings: Settings, name: str, *, env: Mapping[str, str],
                  on_event: OnEvent | None = None, on_note: Callable[[str], None] | None = None,
                  insecure: bool = False, client_factory: Any = None) -> Manifest:
    """The stored model ``name`` stands for (see the module docstring); ``on_note`` hears what was imported."""
    path = local_model_path(store, name)
    if path is not None:
        return import_on_first_use(store, path, on_note=on_note)
    from slmctl.services.pull import ensure_model

    return ensure_model(store, settings, name, env=env, on_event=on_event, insecure=insecure,
                        client_factory=client_factory)


def local_model_path(store: ModelStore, name: str) -> Path | None:
    """The file or folder ``name`` names, None when it is a model name (see the module docstring)."""
    text = name.strip()
    path = Path(text).expanduser()
    if _explicit_path(text):
        if not path.exists():
            raise UsageError(f"no such file or folder: {text}", hint=_PATH_HINT)
        if not (_is_gguf(path) or (path.is_dir() and _looks_like_onnx_folder(path))):
            raise UsageError(f"{text} is neither a .gguf model file nor an ONNX model folder", hint=_PATH_HINT)
        return path
    try:
        if store.exists(parse_model_ref(text)):
            return None
    except UsageError:
        pass
    if text.lower().endswith(".gguf") and path.is_file():
        return path
    if "/" in text and path.is_dir() and _looks_like_onnx_folder(path):
        return path
    return None


_PATH_HINT = "run a .gguf file or an ONNX model folder by its path, or a stored model by its name (see 'slmctl list')"


def _is_gguf(path: Path) -> bool:
    """A file named ``*.gguf`` or starting with the GGUF magic (Ollama's blobs have no extension)."""
    if not path.is_file():
        return False
    if path.name.lower().endswith(".gguf"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def _explicit_path(text: str) -> bool:
    if text in (".", "..") or text.startswith(("./", "../", "/", "~")):
        return True
    return os.sep != "/" and (os.sep in text or text[1:3] in (":\\", ":/") or text.startswith((".\\", "..\\")))


def _looks_like_onnx_folder(path: Path) -> bool:
    return ((path / "genai_config.json").is_file() or any(path.glob("*.onnx"))
            or any((path / "onnx").glob("*.onnx")))


def import_on_first_use(store: ModelStore, path: Path, *, on_note: Callable[[str], None] | None = None) -> Manifest:
    """The model imported from ``path``: the stored one if the file is unchanged, else imported now."""
    note = on_note or (lambda _text: None)
    origin = path.resolve()
    from_here = [m for m in store.list() if _imported_from(m, origin)]
    for manifest in from_here:
        if _unchanged(manifest, origin):
            return manifest
    base = default_name(origin)
    names = [base] + [f"{base}-{number}" for number in range(2, MAX_SUFFIX + 2)]
    planned = next((n for n in names if _free_or_from(store, n, origin)), names[0])
    if from_here:
        note(f"{origin} changed since it was imported as '{from_here[0].ref}': importing it again")
    note(f"importing {origin} as '{parse_model_ref(planned)}' (first use; 'slmctl rm {planned}' removes it)")
    prepared = prepare_path(store, origin)
    try:
        with store.locked():  # the name is decided and taken in one step
            for name in names:
                ref = parse_model_ref(name)
                try:
                    existing: Manifest | None = store.get(ref)
                except ModelNotFound:
                    existing = None
                except OperationFailed:
                    continue  # an unreadable manifest holds the name
                manifest = new_manifest(ref, prepared)
                if existing is not None and existing.same_content(manifest):
                    prepared.discard()
                    if name != planned:
                        note(f"it is already stored as '{ref}'")
                    return existing
                if existing is None or _imported_from(existing, origin):
                    if name != planned:
                        note(f"'{parse_model_ref(planned)}' is another model: stored it as '{ref}'")
                    return store.commit(manifest, prepared.staged)
    except BaseException:
        prepared.discard()
        raise
    prepared.discard()
    raise UsageError(f"the names '{names[0]}' to '{names[-1]}' all belong to other models",
                     hint=f"import it under a name of your choice: slmctl import {origin} --name NAME, "
                          "then run NAME")


def _imported_from(manifest: Manifest, origin: Path) -> bool:
    return manifest.source.type == "local" and manifest.source.ref == str(origin)


def _free_or_from(store: ModelStore, name: str, origin: Path) -> bool:
    try:
        return _imported_from(store.get(parse_model_ref(name)), origin)
    except ModelNotFound:
        return True
    except OperationFailed:
        return False


def _unchanged(manifest: Manifest, origin: Path) -> bool:
    """Whether the file (or every file of the folder) the model came from is as it was when imported."""
    single = manifest.format == "gguf" and len(manifest.files) == 1
    files = [(origin, manifest.files[0].size)] if single else [(origin / e.path, e.size) for e in manifest.files]
    imported = manifest.created_at.timestamp()
    try:
        return all(p.stat().st_size == size and p.stat().st_mtime <= imported for p, size in files)
    except OSError:
        return False

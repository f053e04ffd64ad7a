"""``slmctl create`` and ``POST /api/create``: a new model from a Modelfile.

The Modelfile language itself (parsing, templates) is :mod:`slmctl.modelfile`'s; this service turns a
parsed Modelfile into a stored model. FROM resolves to a ``.gguf`` file / ONNX folder relative to the
Modelfile's folder, or to a stored model (whose layers are inherited). A catalog alias or a source
reference (``hf.co/...``, ``hf://...``, ``ollama://...``, ``https://....gguf``) that is not stored is
pulled first, as ``run`` does, through the pull function the caller's :class:`BasePull` carries (by
default :func:`slmctl.services.pull.ensure_model`, imported only when a base is pulled: importing this
module does not import the pull service); the pulled base
stays in the store as a model of its own, and the pull's progress events go to the caller's callback.
The new manifest shares the base's blobs and stores each layer (template, system, params, messages,
license, knowledge files, adapter) as a blob, encoded by :mod:`slmctl.store.layers`; the same Modelfile
gives the same digest on every machine. The TEMPLATE is checked first (syntax, functions, and fields
against the values it will be given: :func:`slmctl.modelfile.prompting.check_template`), so a misspelt
field fails here, located in the Modelfile, before anything is pulled. Everything is staged first and
committed at once, so a failed create leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from slmctl.engine import Engine, compose_system
from slmctl.errors import InvalidModelFile, UsageError
from slmctl.events import OnEvent
from slmctl.modelfile.documents import read_document
from slmctl.modelfile.model import Modelfile, ModelfileError
from slmctl.modelfile.parser import parse_modelfile
from slmctl.names import parse_model_ref
from slmctl.options import build_options, capped_context
from slmctl.refs import parse_source
from slmctl.services.importer import prepare_path
from slmctl.settings import Settings
from slmctl.store import FileEntry, Layer, Manifest, ModelDetails, ModelStore, SourceInfo, StagedBlob
from slmctl.store.layers import (
    LAYER_ORDER,
    MEDIA_TYPES,
    decode_layers,
    encode_file,
    encode_messages,
    encode_params,
    encode_text,
)

#: Tokens a system context must leave free in the context window for the conversation itself.
CONVERSATION_ROOM = 128

Progress = Callable[[str], None]


@dataclass
class _Build:
    """What a create is assembling: the model files, staged blobs and the layers."""

    format: str
    files: list[FileEntry]
    details: ModelDetails
    model_path: Path
    #: The stored model FROM named (its layers are inherited), or None for a file or folder.
    base: Manifest | None = None
    inherited: list[Layer] = field(default_factory=list)
    staged: list[StagedBlob] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    #: Contents of the layers staged by this create (their blobs are not in the store yet).
    contents: dict[str, bytes] = field(default_factory=dict)

    def layer_texts(self, engine: Engine, kind: str) -> list[str]:
        return [(self.contents.get(layer.digest) or engine.store.blob_path(layer.digest).read_bytes()).decode()
                for layer in self.layers if layer.kind == kind]


def read_modelfile(path: Path) -> Modelfile:
    if not path.is_file():
        raise UsageError(f"no Modelfile at {path}", "pass one with -f FILE (default: ./Modelfile)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc}") from exc
    return parse_modelfile(text, filename=str(path))


class EnsureModel(Protocol):
    """Pulls ``name`` into ``store`` unless it is stored; returns its manifest
    (:func:`slmctl.services.pull.ensure_model`)."""

    def __call__(self, store: ModelStore, settings: Settings, name: str, *, env: Mapping[str, str],
                 on_event: OnEvent | None = None, insecure: bool = False) -> Manifest: ...


def _ensure_model(store: ModelStore, settings: Settings, name: str, *, env: Mapping[str, str],
                  on_event: OnEvent | None = None, insecure: bool = False) -> Manifest:
    """The default :class:`EnsureModel`: the pull service's, imported when a FROM base is pulled."""
    from slmctl.services.pull import ensure_model

    return ensure_model(store, settings, name, env=env, on_event=on_event, insecure=insecure)


@dataclass(frozen=True)
class BasePull:
    """What pulling a FROM base needs: the settings (offline mode, catalog), the transport environment
    (``HF_ENDPOINT``, ``HF_TOKEN``, ...), where the pull's progress events go, and the pull itself."""

    settings: Settings
    env: Mapping[str, str]
    on_event: OnEvent | None = None
    #: Allow a plain http:// source (``--insecure``).
    insecure: bool = False
    #: What pulls a base that is not stored (tests inject their own).
    ensure: EnsureModel = _ensure_model


def _looks_like_path(value: str, folder: Path) -> bool:
    """A file or folder: an explicit or existing path, or a ``.gguf`` name that is no source reference."""
    if value.startswith((".", "/", "~")) or "\\" in value or (folder / value).exists():
        return True
    return value.lower().endswith(".gguf") and parse_source(value, allow_http=True) is None


def _base_manifest(engine: Engine, source: str, pull: BasePull | None) -> Manifest:
    """The stored base; without ``pull`` a name that is not stored is not looked up anywhere else."""
    if pull is None:
        return engine.manifest(source)
    return pull.ensure(engine.store, pull.settings, source, env=pull.env, on_event=pull.on_event,
                       insecure=pull.insecure)


def _resolve_from(engine: Engine, source: str, folder: Path, progress: Progress, pull: BasePull | None) -> _Build:
    if _looks_like_path(source, folder):
        path = (folder / Path(source).expanduser()).resolve()
        progress(f"importing base {path}")
        prepared = prepare_path(engine.store, path)
        return _Build(prepared.format, prepared.files, prepared.details, path, staged=list(prepared.staged))
    base = _base_manifest(engine, source, pull)
    progress(f"using base {base.ref}")
    return _Build(base.format, list(base.files), base.details, engine.store.model_path(base), base=base,
                  inherited=list(base.layers))


def _stage_layer(engine: Engine, build: _Build, kind: str, data: bytes) -> None:
    blob = engine.store.stage_bytes(data)
    build.staged.append(blob)
    build.contents[blob.digest] = data
    build.layers.append(Layer(kind=kind, digest=blob.digest, size=blob.size, media_type=MEDIA_TYPES[kind]))


def _add_layers(engine: Engine, build: _Build, modelfile: Modelfile, folder: Path) -> None:
    """Modelfile instructions override the base's layers kind by kind; the rest is inherited."""
    inherited = engine.defaults(build.base).params if build.base is not None else {}
    params = {**inherited, **modelfile.parameters}
    given: dict[str, list[bytes]] = {
        "template": [encode_text(modelfile.template)] if modelfile.template is not None else [],
        # the text between triple quotes usually starts and ends with a line break: not part of the prompt
        "system": [encode_text(modelfile.system.strip())] if modelfile.system is not None else [],
        "params": [encode_params(params)] if params else [],
        "messages": [encode_messages((m.role, m.content.strip()) for m in modelfile.messages)]
        if modelfile.messages else [],
        "license": [encode_text(text) for text in modelfile.licenses],
        "file": [encode_file(Path(f).name, read_document(folder / Path(f).expanduser())) for f in modelfile.files],
        "adapter": [],
    }
    for kind in LAYER_ORDER:
        if kind == "adapter" and modelfile.adapters:
            _stage_adapters(engine, build, modelfile.adapters, folder)
        elif given[kind]:
            for data in given[kind]:
                _stage_layer(engine, build, kind, data)
        elif kind != "params":  # params were merged above
            build.layers += [layer for layer in build.inherited if layer.kind == kind]


def _stage_adapters(engine: Engine, build: _Build, adapters: list[str], folder: Path) -> None:
    if build.format != "gguf":
        raise InvalidModelFile("ADAPTER is supported for GGUF models only", "remove the ADAPTER line")
    from slmctl.formats.gguf_info import inspect_gguf

    for adapter in adapters:
        path = (folder / Path(adapter).expanduser()).resolve()
        info = inspect_gguf(path)
        if info.metadata.get("general.type") != "adapter":
            raise InvalidModelFile(f"ADAPTER {adapter}: not a GGUF LoRA adapter (general.type is "
                                   f"{info.metadata.get('general.type')!r})",
                                   "convert the LoRA with llama.cpp's convert_lora_to_gguf.py")
        blob = engine.store.stage_file(path)
        build.staged.append(blob)
        build.layers.append(Layer(kind="adapter", digest=blob.digest, size=blob.size,
                                  media_type=MEDIA_TYPES["adapter"]))


def _quantize(engine: Engine, build: _Build, quant: str, progress: Progress) -> None:
    from slmctl.backends.gguf_quantize import QUANTIZABLE, quant_name, quantize_gguf

    target = quant_name(quant)
    if build.format != "gguf":
        raise UsageError("--quantize works on GGUF models only")
    source = (build.details.quantization or "").upper()
    if source not in QUANTIZABLE:
        raise InvalidModelFile(f"cannot quantize a {source or 'unknown'} model: --quantize needs an F16, BF16 or "
                               f"F32 base", "start from the unquantized GGUF file")
    dst = engine.store.staging_path(".gguf")
    progress(f"quantizing {source} to {target.upper()}")
    quantize_gguf(build.model_path, dst, target,
                  on_progress=lambda done, total: progress(f"quantizing tensor {done}/{total}"))
    blob = engine.store.stage_written(dst)
    build.staged.append(blob)
    name = Path(build.files[0].path).stem
    build.files = [FileEntry(path=f"{name}-{target}.gguf", digest=blob.digest, size=blob.size)]
    build.details = build.details.model_copy(update={"quantization": target.upper()})
    build.model_path = dst


def _check_context(engine: Engine, build: _Build, name: str, say: Progress) -> None:
    """The system prompt and knowledge files must leave room in the context for a conversation."""
    values = decode_layers({kind: build.layer_texts(engine, kind) for kind in ("system", "params", "file")},
                           model=name)
    context = compose_system(values.system, values.documents)
    if not context:
        return
    load, _ = build_options(values.params)
    num_ctx = capped_context(load.num_ctx, build.details.context_length)
    say("checking the system context against the context size")
    backend = engine.backends.get(build.format)
    with backend.load(build.model_path, load.model_copy(update={"num_ctx": min(num_ctx, 512)})) as model:
        tokens = len(model.tokenize(context))
    if tokens + CONVERSATION_ROOM > num_ctx:
        raise InvalidModelFile(
            f"the system prompt and FILE documents take {tokens} tokens but the context holds {num_ctx} "
            f"(and {CONVERSATION_ROOM} are kept for the conversation)",
            "raise PARAMETER num_ctx (up to the model's own context), or shorten or split the documents")


def _check_template(modelfile: Modelfile, path: Path) -> None:
    """A TEMPLATE outside the supported subset, or with a field its values cannot have (``.Sytem``), fails
    now, before any pull, located in the Modelfile, instead of printing nothing at run time."""
    if modelfile.template is None:
        return
    from slmctl.modelfile.gotemplate import TemplateError
    from slmctl.modelfile.prompting import check_template

    try:
        check_template(modelfile.template)
    except TemplateError as exc:
        if modelfile.template_at is None or exc.line is None or exc.column is None:
            raise
        line, column = modelfile.template_at
        raise ModelfileError(f"in TEMPLATE: {exc.reason}", exc.hint, filename=str(path), line=line + exc.line - 1,
                             column=exc.column + (column - 1 if exc.line == 1 else 0)) from exc


def _version_key(text: str) -> tuple[int, ...]:
    core = text.split("-", 1)[0].split("+", 1)[0]
    return tuple(int(part) for part in core.split("."))


def _check_requires(modelfile: Modelfile, path: Path) -> None:
    """REQUIRES names the oldest slmctl that can build the model."""
    from slmctl import __version__

    if modelfile.requires and _version_key(modelfile.requires) > _version_key(__version__):
        raise InvalidModelFile(f"{path} requires slmctl {modelfile.requires} or newer; this is {__version__}",
                               "upgrade slmctl: pip install --upgrade slmctl")


def create_model(engine: Engine, name: str, modelfile_path: Path, *, quantize: str | None = None,
                 progress: Progress | None = None, pull: BasePull | None = None) -> Manifest:
    """Build model ``name`` from the Modelfile at ``modelfile_path``; returns its manifest.

    With ``pull``, a FROM catalog alias or source reference that is not in the store is pulled first
    (offline mode: :class:`~slmctl.errors.NetworkError`); without it FROM must be stored or a path.
    """
    say = progress or (lambda _message: None)
    ref = parse_model_ref(name)
    modelfile = read_modelfile(modelfile_path)
    _check_requires(modelfile, modelfile_path)
    _check_template(modelfile, modelfile_path)
    folder = modelfile_path.resolve().parent
    build = _resolve_from(engine, modelfile.from_, folder, say, pull)
    try:
        if quantize:
            _quantize(engine, build, quantize, say)
        _add_layers(engine, build, modelfile, folder)
        _check_context(engine, build, str(ref), say)
        manifest = Manifest(name=ref.name, tag=ref.tag, format=build.format, files=build.files,
                            layers=build.layers, source=SourceInfo(type="create", ref="Modelfile"),
                            details=build.details, base=build.files[0].digest)
        say("writing manifest")
        return engine.store.commit(manifest, build.staged)
    except BaseException:
        for blob in build.staged:
            blob.discard()
        raise

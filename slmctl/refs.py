"""Source references: where a model can be pulled from. Pure parsing, no I/O.

Forms (``docs``: the model-name grammar of the CLI contract):

* ``hf.co/<owner>/<repo>[:<QUANT>]`` - a GGUF repository on the Hugging Face Hub, Ollama style;
* ``hf://<owner>/<repo>[/<path>]`` - a repository, a ``.gguf`` file in it, or an ONNX folder in it;
* ``ollama://[<host>/][<namespace>/]<model>[:<tag>]`` - an Ollama registry model (defaults:
  ``registry.ollama.ai``, ``library``, ``latest``);
* ``https://.../<file>.gguf`` - a plain download (``http://`` only with ``allow_http``).

:func:`parse_source` returns a typed reference, None for text that is not a source reference (a
local or catalog name, a path), and raises :class:`~slmctl.errors.UsageError` (exit 2) for a
malformed one. ``str(ref)`` gives back a reference that parses to the same value.

A leaf beside :mod:`slmctl.names` (it imports only :mod:`slmctl.errors`): the catalog, the transports
(:mod:`slmctl.sources`) and the services all read references through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from slmctl.errors import UsageError

OLLAMA_REGISTRY = "registry.ollama.ai"
OLLAMA_NAMESPACE = "library"
OLLAMA_TAG = "latest"

_HF_SHORT = "hf.co/"
_HF_SCHEME = "hf://"
_OLLAMA_SCHEME = "ollama://"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._+@=()\[\], -]{1,255}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?(:\d{1,5})?$")
_OLLAMA_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class HfRepoRef:
    """``hf.co/<owner>/<repo>[:<QUANT>]``: pick the GGUF file of ``quant`` (or the default) in the repo."""

    owner: str
    repo: str
    quant: str | None = None

    kind = "hf"

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"

    def __str__(self) -> str:
        return f"hf.co/{self.repo_id}" + (f":{self.quant}" if self.quant else "")


@dataclass(frozen=True)
class HfPathRef:
    """``hf://<owner>/<repo>[/<path>]``: the whole repo, one file, or one folder of it."""

    owner: str
    repo: str
    path: str | None = None

    kind = "hf"

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def is_gguf_file(self) -> bool:
        return bool(self.path) and self.path.lower().endswith(".gguf")  # type: ignore[union-attr]

    def __str__(self) -> str:
        return f"hf://{self.repo_id}" + (f"/{self.path}" if self.path else "")


@dataclass(frozen=True)
class OllamaRef:
    """``ollama://[<host>/][<namespace>/]<model>[:<tag>]`` with the registry's defaults filled in."""

    model: str
    tag: str = OLLAMA_TAG
    namespace: str = OLLAMA_NAMESPACE
    host: str = OLLAMA_REGISTRY

    kind = "ollama"

    def __str__(self) -> str:
        return f"ollama://{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """``model:tag`` (plus the namespace/host when they are not the defaults)."""
        prefix = "" if self.host == OLLAMA_REGISTRY else f"{self.host}/"
        if prefix or self.namespace != OLLAMA_NAMESPACE:
            prefix += f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


@dataclass(frozen=True)
class UrlRef:
    """``https://.../<file>.gguf``: one file over plain HTTP(S)."""

    url: str

    kind = "url"

    @property
    def filename(self) -> str:
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url


SourceRef = HfRepoRef | HfPathRef | OllamaRef | UrlRef


def _bad(text: str, why: str, hint: str) -> UsageError:
    return UsageError(f"invalid source reference {text!r}: {why}", hint=hint)


_HF_HINT = "use hf.co/<owner>/<repo>[:<QUANT>] or hf://<owner>/<repo>[/<path>]"
_OLLAMA_HINT = "use ollama://[<host>/][<namespace>/]<model>[:<tag>], e.g. ollama://qwen2.5:3b"
_URL_HINT = "use https://<host>/<path>/<file>.gguf"


def _owner_repo(text: str, parts: list[str]) -> tuple[str, str]:
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise _bad(text, "both <owner> and <repo> are needed", _HF_HINT)
    owner, repo = parts[0], parts[1]
    for value, what in ((owner, "owner"), (repo, "repo")):
        if not _NAME.match(value) or ".." in value:
            raise _bad(text, f"bad {what} {value!r}", _HF_HINT)
    return owner, repo


def _parse_hf_short(text: str, body: str) -> HfRepoRef:
    repo_part, sep, quant = body.partition(":")
    if sep and not _TAG.match(quant):
        raise _bad(text, f"bad quant tag {quant!r}", _HF_HINT)
    parts = repo_part.split("/")
    if len(parts) != 2:
        raise _bad(text, "expected exactly <owner>/<repo>", _HF_HINT)
    owner, repo = _owner_repo(text, parts)
    return HfRepoRef(owner, repo, quant if sep else None)


def _parse_hf_path(text: str, body: str) -> HfPathRef:
    parts = body.split("/")
    owner, repo = _owner_repo(text, parts)
    rest = parts[2:]
    if rest and rest[-1] == "":
        rest = rest[:-1]  # a trailing slash names the same folder
    for segment in rest:
        if segment in ("", ".", "..") or not _PATH_SEGMENT.match(segment) or segment != segment.strip():
            raise _bad(text, f"bad path part {segment!r}", _HF_HINT)
    return HfPathRef(owner, repo, "/".join(rest) or None)


def _looks_like_host(segment: str) -> bool:
    return "." in segment or ":" in segment or segment.lower() == "localhost"


def _parse_ollama(text: str, body: str) -> OllamaRef:
    if not body:
        raise _bad(text, "the model is missing", _OLLAMA_HINT)
    parts = body.split("/")
    last = parts[-1]
    model, sep, tag = last.partition(":")
    if sep and not _TAG.match(tag):
        raise _bad(text, f"bad tag {tag!r}", _OLLAMA_HINT)
    if not _OLLAMA_MODEL.match(model) or ".." in model:
        raise _bad(text, f"bad model name {model!r}", _OLLAMA_HINT)
    prefix = parts[:-1]
    host, namespace = OLLAMA_REGISTRY, OLLAMA_NAMESPACE
    if len(prefix) == 2:
        host, namespace = prefix
    elif len(prefix) == 1:
        if _looks_like_host(prefix[0]):
            host = prefix[0]
        else:
            namespace = prefix[0]
    elif len(prefix) > 2:
        raise _bad(text, "too many '/'-separated parts", _OLLAMA_HINT)
    if not _HOST.match(host) or ".." in host:
        raise _bad(text, f"bad registry host {host!r}", _OLLAMA_HINT)
    if not _OLLAMA_MODEL.match(namespace) or ".." in namespace:
        raise _bad(text, f"bad namespace {namespace!r}", _OLLAMA_HINT)
    return OllamaRef(model, tag if sep else OLLAMA_TAG, namespace, host)


def _parse_url(text: str, allow_http: bool) -> UrlRef:
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise _bad(text, f"bad URL ({exc})", _URL_HINT) from None
    del port
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise _bad(text, "plain http is not allowed", "use https, or pass --insecure to allow http")
    if not parts.hostname or not _HOST.match(parts.hostname):
        raise _bad(text, "the host is missing or bad", _URL_HINT)
    if not parts.path.lower().endswith(".gguf") or parts.path.endswith("/.gguf"):
        raise _bad(text, "only URLs of a .gguf file can be pulled", _URL_HINT)
    if any(c.isspace() for c in text):
        raise _bad(text, "it contains white space", _URL_HINT)
    return UrlRef(text)


def parse_source(text: str, *, allow_http: bool = False) -> SourceRef | None:
    """A typed source reference, None when ``text`` is not one, :class:`UsageError` when malformed."""
    if not isinstance(text, str):
        return None
    raw = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        if "://" in raw or raw[:len(_HF_SHORT)].lower() == _HF_SHORT:
            raise _bad(raw, "it contains control characters", "remove them")
        return None
    def starts(prefix: str) -> bool:
        return raw[:len(prefix)].lower() == prefix

    if starts(_HF_SHORT):
        return _parse_hf_short(raw, raw[len(_HF_SHORT):])
    if starts(_HF_SCHEME):
        return _parse_hf_path(raw, raw[len(_HF_SCHEME):])
    if starts(_OLLAMA_SCHEME):
        return _parse_ollama(raw, raw[len(_OLLAMA_SCHEME):])
    if starts("https://") or starts("http://"):
        return _parse_url(raw, allow_http)
    scheme, sep, _ = raw.partition("://")
    if sep and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*$", scheme):
        raise _bad(raw, f"unsupported scheme '{scheme}'", "use hf://, hf.co/, ollama:// or https://")
    return None

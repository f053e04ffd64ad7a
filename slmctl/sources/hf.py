"""The Hugging Face Hub transport: ``hf.co/<owner>/<repo>[:<QUANT>]`` and ``hf://<owner>/<repo>[/<path>]``.

Listing uses ``GET {endpoint}/api/models/{owner}/{repo}/tree/{revision}[/{folder}]?recursive=true``
(following ``Link: rel="next"`` pages); files download from
``{endpoint}/{owner}/{repo}/resolve/{revision}/{path}``. Resolution:

* ``hf://.../<file>.gguf``: that file; a ``-0000k-of-0000N.gguf`` part brings all N parts, in order;
* ``hf://<owner>/<repo>[/<folder>]`` with ``genai_config.json`` in it: every file of the folder (paths
  relative to it; nested folders holding their own ``genai_config.json`` and ``.gitattributes`` are left
  out) as an ONNX model; a folder without one but with GGUF files is resolved like ``hf.co``;
* ``hf.co/<owner>/<repo>[:<QUANT>]``: the GGUF (split sets count as one) whose name carries the quant
  (default ``Q4_K_M``; with no quant asked, a repo's only GGUF model whatever its name), else
  :class:`ModelNotFound` listing the quants available.

The environment is never read here: the caller passes ``endpoint`` and ``token`` in.
:func:`request` (status mapping to slmctl errors) is shared with the other transports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from slmctl.errors import ModelNotFound, NetworkError, UsageError
from slmctl.refs import HfPathRef, HfRepoRef
from slmctl.sources.base import ClientFactory, RemoteFile, RemoteModel
from slmctl.sources.downloader.http import (
    RETRYABLE_STATUS,
    TOKEN_HINT,
    DownloadError,
    RetryPolicy,
    Transient,
    display_url,
    parse_retry_after,
    with_retries,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
DEFAULT_QUANT = "Q4_K_M"
METADATA_RETRIES = 3
#: What a metadata request's timeout is called in a stall message (httpx's default timeout: 5 s).
METADATA_TIMEOUT_S = 5.0
GENAI_CONFIG = "genai_config.json"
_MAX_PAGES = 1000
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q[1-8](?:_[A-Za-z0-9]+)*|BF16|F16|F32|FP16|FP32)(?![A-Za-z0-9])", re.IGNORECASE
)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    what: str,
    hint_401: str | None = TOKEN_HINT,
    policy: RetryPolicy | None = None,
) -> httpx.Response:
    """``method url`` read in full; 404 -> :class:`ModelNotFound`, other failures -> :class:`NetworkError`.

    Connection errors, timeouts, 5xx, 408 and 429 are retried with backoff (``policy``, default
    :data:`METADATA_RETRIES` retries) like file downloads.
    """
    shown = display_url(url)
    last: list[httpx.TransportError] = []

    def attempt() -> httpx.Response:
        try:
            response = client.request(method, url, headers=dict(headers or {}), follow_redirects=True)
        except httpx.TransportError as exc:
            last[:] = [exc]
            raise
        if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
            raise Transient(f"HTTP {response.status_code} from {shown}", status=response.status_code,
                            retry_after=parse_retry_after(response.headers.get("Retry-After")))
        return response

    try:
        response = with_retries(policy or RetryPolicy(retries=METADATA_RETRIES), attempt, url=url,
                                stall_timeout=METADATA_TIMEOUT_S)
    except DownloadError as exc:  # the transport error itself stays the cause (the Ollama transport reads it)
        raise NetworkError(f"could not get the {what} from {shown}: {exc.reason}",
                           "check the network connection (and HTTPS_PROXY / SSL_CERT_FILE behind a proxy), "
                           "then try again") from (last[0] if last else exc)
    status = response.status_code
    if 200 <= status < 300:
        return response
    if status == 404:
        raise ModelNotFound(f"{what} not found (HTTP 404 from {shown})", "check the model name or URL")
    if status in (401, 403):
        raise NetworkError(f"access denied (HTTP {status}) for {what} at {shown}", hint_401)
    raise NetworkError(f"{what}: HTTP {status} from {shown}", "try again later")


def quant_of(filename: str) -> str | None:
    """The quantisation a GGUF file name carries (``Q4_K_M``, ``IQ4_XS``, ``F16``...), upper-cased."""
    name = filename.rsplit("/", 1)[-1]
    split = _SPLIT_RE.match(name)
    stem = split.group("stem") if split else re.sub(r"\.gguf$", "", name, flags=re.IGNORECASE)
    found = _QUANT_RE.findall(stem)
    return found[-1].upper() if found else None


def _has_quant(filename: str, quant: str, *, exact: bool) -> bool:
    name = filename.rsplit("/", 1)[-1]
    if not exact:
        return quant.lower() in name.lower()
    pattern = r"(?<![A-Za-z0-9])" + re.escape(quant) + r"(?![A-Za-z0-9_])"
    return re.search(pattern, name, re.IGNORECASE) is not None


class HfTransport:
    """Resolves Hugging Face references; ``revision`` pins a branch, tag or commit (default ``main``)."""

    def __init__(
        self,
        client_factory: ClientFactory,
        *,
        endpoint: str | None = None,
        token: str | None = None,
        revision: str = DEFAULT_REVISION,
    ) -> None:
        self.client_factory = client_factory
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.token = token or None
        self.revision = revision or DEFAULT_REVISION

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # -- URLs ---------------------------------------------------------------------------------------

    def tree_url(self, owner: str, repo: str, revision: str, folder: str | None = None) -> str:
        url = f"{self.endpoint}/api/models/{quote(owner)}/{quote(repo)}/tree/{quote(revision, safe='')}"
        if folder:
            url += "/" + quote(folder, safe="/")
        return url + "?recursive=true"

    def file_url(self, owner: str, repo: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{quote(owner)}/{quote(repo)}/resolve/{quote(revision, safe='')}/{quote(path, safe='/')}"

    # -- resolution ---------------------------------------------------------------------------------

    def resolve(
        self, ref: object, *, quant: str | None = None, revision: str | None = None
    ) -> RemoteModel:
        """The remote model of ``ref``; ``quant`` (when given) overrides the reference's own quant tag."""
        rev = revision or self.revision
        if isinstance(ref, HfRepoRef):
            entries = self._list(ref.owner, ref.repo, rev, None, str(ref))
            return self._pick_quant(ref.owner, ref.repo, rev, entries, None, quant or ref.quant, str(ref))
        if isinstance(ref, HfPathRef):
            if ref.is_gguf_file:
                return self._gguf_file(ref, rev)
            entries = self._list(ref.owner, ref.repo, rev, ref.path, str(ref))
            return self._folder(ref, rev, entries, quant)
        raise UsageError(f"not a Hugging Face reference: {ref!r}")

    def _list(self, owner: str, repo: str, revision: str, folder: str | None, what: str) -> list[dict]:
        """Every entry of the tree under ``folder`` (repo-relative paths), following pagination."""
        url: str | None = self.tree_url(owner, repo, revision, folder)
        entries: list[dict] = []
        with self.client_factory() as client:
            for _ in range(_MAX_PAGES):
                if url is None:
                    break
                response = request(client, "GET", url, headers=self.headers, what=what)
                try:
                    page = response.json()
                except ValueError:
                    raise NetworkError(f"the Hub answered something that is not JSON for {what}") from None
                if not isinstance(page, list):
                    raise NetworkError(f"unexpected tree listing for {what} (not a JSON list)")
                entries.extend(e for e in page if isinstance(e, dict) and isinstance(e.get("path"), str))
                nxt = response.links.get("next", {}).get("url")
                url = str(response.url.join(nxt)) if nxt else None
        return entries

    def _remote_file(self, owner: str, repo: str, revision: str, entry: dict, rel: str) -> RemoteFile:
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else None
        size = (lfs or {}).get("size", entry.get("size"))
        oid = (lfs or {}).get("oid") if lfs else None
        sha = f"sha256:{oid.lower()}" if isinstance(oid, str) and _SHA256_HEX.match(oid.lower()) else None
        return RemoteFile(
            path=rel,
            url=self.file_url(owner, repo, revision, entry["path"]),
            size=size if isinstance(size, int) and size >= 0 else None,
            sha256=sha,
        )

    def _model(self, source: str, fmt: str, files: list[RemoteFile], revision: str) -> RemoteModel:
        return RemoteModel(
            source=source, source_type="hf", format=fmt, files=files,  # type: ignore[arg-type]
            revision=revision, headers=self.headers,
        )

    def _gguf_file(self, ref: HfPathRef, revision: str) -> RemoteModel:
        path = ref.path or ""
        folder = path.rsplit("/", 1)[0] if "/" in path else None
        entries = self._list(ref.owner, ref.repo, revision, folder, str(ref))
        files = {e["path"]: e for e in entries if e.get("type", "file") == "file"}
        if path not in files:
            raise ModelNotFound(f"{path!r} is not in {ref.repo_id} (revision {revision})",
                                "check the file name on the model page")
        parts = _split_set(path, files)
        chosen = [(p, files[p]) for p in parts]
        remote = [self._remote_file(ref.owner, ref.repo, revision, e, p.rsplit("/", 1)[-1]) for p, e in chosen]
        return self._model(str(ref), "gguf", remote, revision)

    def _folder(self, ref: HfPathRef, revision: str, entries: list[dict], quant: str | None) -> RemoteModel:
        prefix = f"{ref.path}/" if ref.path else ""
        files = [e for e in entries if e.get("type", "file") == "file" and e["path"].startswith(prefix)]
        if not files:
            raise ModelNotFound(f"{ref} is empty or not a folder (revision {revision})")
        if any(e["path"] == prefix + GENAI_CONFIG for e in files):
            nested = {e["path"][: -len(GENAI_CONFIG)] for e in files
                      if e["path"].endswith("/" + GENAI_CONFIG) and e["path"] != prefix + GENAI_CONFIG}
            chosen = [
                e for e in files
                if not any(e["path"].startswith(n) for n in nested) and e["path"].rsplit("/", 1)[-1] != ".gitattributes"
            ]
            chosen.sort(key=lambda e: e["path"])
            remote = [self._remote_file(ref.owner, ref.repo, revision, e, e["path"][len(prefix):]) for e in chosen]
            return self._model(str(ref), "onnx", remote, revision)
        if any(e["path"].lower().endswith(".gguf") for e in files):
            return self._pick_quant(ref.owner, ref.repo, revision, files, ref.path, quant, str(ref))
        raise ModelNotFound(
            f"{ref} holds neither {GENAI_CONFIG} (an ONNX model) nor .gguf files",
            "name the folder of an ONNX GenAI model or a .gguf file",
        )

    def _pick_quant(
        self, owner: str, repo: str, revision: str, entries: list[dict], folder: str | None,
        quant: str | None, what: str,
    ) -> RemoteModel:
        files = {e["path"]: e for e in entries if e.get("type", "file") == "file"}
        # One candidate per model: single files and the first part of each split set (projectors excluded).
        candidates = sorted(
            p for p in files
            if p.lower().endswith(".gguf")
            and not p.rsplit("/", 1)[-1].lower().startswith("mmproj")
            and (not (m := _SPLIT_RE.match(p.rsplit("/", 1)[-1])) or int(m.group("index")) == 1)
        )
        wanted = quant or DEFAULT_QUANT
        matches = [p for p in candidates if _has_quant(p, wanted, exact=True)]
        if not matches:
            loose = [p for p in candidates if _has_quant(p, wanted, exact=False)]
            if len({quant_of(p) for p in loose}) == 1:
                matches = loose
        only = not matches and quant is None and len(candidates) == 1
        if only:
            matches = candidates  # the repo's only model: there is no quant to choose
        if not matches:
            available = sorted({q for p in candidates if (q := quant_of(p))})
            if not candidates:
                raise ModelNotFound(f"no GGUF files in {what} (revision {revision})",
                                    "use hf://<owner>/<repo>/<folder> for an ONNX model")
            shown = ", ".join(available) if available else ", ".join(p.rsplit("/", 1)[-1] for p in candidates)
            raise ModelNotFound(
                f"no {wanted} GGUF in {what}; available quants: {shown}",
                f"pick one, e.g. hf.co/{owner}/{repo}:{available[0] if available else '<QUANT>'}",
            )
        # Prefer files nearest the root, then the shortest name.
        matches.sort(key=lambda p: (p.count("/"), len(p), p))
        first = matches[0]
        parts = _split_set(first, files)
        remote = [self._remote_file(owner, repo, revision, files[p], p.rsplit("/", 1)[-1]) for p in parts]
        source = what
        if what.startswith("hf.co/"):
            tag = quant or quant_of(first) or (None if only else wanted)
            source = f"hf.co/{owner}/{repo}" + (f":{tag}" if tag else "")
        return self._model(source, "gguf", remote, revision)


def _split_set(path: str, files: Mapping[str, object]) -> list[str]:
    """``[path]``, or every part of the split set ``path`` belongs to, in order (all must exist)."""
    folder, _, name = path.rpartition("/")
    match = _SPLIT_RE.match(name)
    if not match:
        return [path]
    count = int(match.group("count"))
    width = len(match.group("count"))
    stem = match.group("stem")
    parts = [
        (f"{folder}/" if folder else "") + f"{stem}-{i:0{width}d}-of-{match.group('count')}.gguf"
        for i in range(1, count + 1)
    ]
    by_lower = {p.lower(): p for p in files}
    resolved = []
    for part in parts:
        actual = part if part in files else by_lower.get(part.lower())
        if actual is None:
            raise ModelNotFound(f"split GGUF part {part!r} is missing ({count} parts expected)")
        resolved.append(actual)
    return resolved

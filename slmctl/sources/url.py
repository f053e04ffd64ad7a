"""The plain URL transport: ``https://.../<file>.gguf`` is one GGUF file.

The size comes from a ``HEAD`` (``Content-Length``) or, when the server will not say, from a
``Range: bytes=0-0`` probe (``Content-Range``); it stays None when neither tells. The digest is None
unless the caller passes ``expected_sha256``. Plain ``http://`` is refused unless ``insecure``. No
credentials are sent, so a 401/403 comes with :data:`ACCESS_HINT` (not the Hub's ``HF_TOKEN`` hint).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import httpx

from slmctl.errors import ModelNotFound, NetworkError, UsageError
from slmctl.refs import UrlRef
from slmctl.sources.base import ClientFactory, RemoteFile, RemoteModel
from slmctl.sources.downloader.http import PROBE_RANGE, display_url
from slmctl.sources.hf import request

_CONTENT_RANGE = re.compile(r"^bytes\s+\d+-\d+/(\d+)$")
_SHA = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+@=()\[\], -]{1,255}$")
#: The hint for 401/403: a URL is fetched without credentials, so the Hub's HF_TOKEN hint would not help.
ACCESS_HINT = ("the server refused access, and plain URLs are fetched without credentials: for a gated Hugging "
               "Face file use hf://<owner>/<repo>/<file>.gguf with HF_TOKEN set, or download the file "
               "yourself and 'slmctl import' it")


def normalise_sha256(value: str) -> str:
    """``sha256:<hex>`` (lower case) from ``<hex>`` or ``sha256:<hex>``; :class:`UsageError` otherwise."""
    match = _SHA.match(value.strip())
    if not match:
        raise UsageError(f"bad sha256 digest {value!r}", "give 64 hex digits, optionally prefixed with 'sha256:'")
    return "sha256:" + match.group(1).lower()


class UrlTransport:
    """Resolves ``UrlRef`` references."""

    def __init__(self, client_factory: ClientFactory, *, insecure: bool = False) -> None:
        self.client_factory = client_factory
        self.insecure = insecure

    def resolve(self, ref: object, *, quant: str | None = None, expected_sha256: str | None = None) -> RemoteModel:
        """One GGUF file; ``quant`` does not apply to a URL and is ignored."""
        if not isinstance(ref, UrlRef):
            raise UsageError(f"not a URL reference: {ref!r}")
        parts = urlsplit(ref.url)
        if parts.scheme.lower() == "http" and not self.insecure:
            raise UsageError(f"refusing plain http for {display_url(ref.url)}", "use https, or pass --insecure")
        if parts.scheme.lower() not in ("http", "https"):
            raise UsageError(f"unsupported URL scheme in {display_url(ref.url)}")
        name = unquote(ref.filename)
        if not name.lower().endswith(".gguf") or not _SAFE_NAME.match(name) or name.startswith("."):
            raise UsageError(f"cannot pull {display_url(ref.url)}: not a plainly named .gguf file")
        sha = normalise_sha256(expected_sha256) if expected_sha256 else None
        with self.client_factory() as client:
            size = self._size(client, ref.url)
        return RemoteModel(
            source=str(ref), source_type="url", format="gguf",
            files=[RemoteFile(path=name, url=ref.url, size=size, sha256=sha)],
            auth_hint=ACCESS_HINT,
        )

    def _size(self, client: httpx.Client, url: str) -> int | None:
        what = display_url(url)
        try:
            head = request(client, "HEAD", url, what=what)
        except NetworkError:
            head = None  # some servers refuse HEAD (405, 403 on signed URLs): try a range probe
        if head is not None:
            length = head.headers.get("Content-Length", "")
            if length.isdigit() and "gzip" not in head.headers.get("Content-Encoding", ""):
                return int(length)
        try:
            with client.stream("GET", url, headers={"Range": PROBE_RANGE}, follow_redirects=True) as response:
                status = response.status_code
                if status == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                    return int(match.group(1)) if match else None
                if status == 416:
                    return 0
                if 200 <= status < 300:
                    length = response.headers.get("Content-Length", "")
                    return int(length) if length.isdigit() else None
        except httpx.HTTPError as exc:
            raise NetworkError(f"could not reach {what}: {exc or type(exc).__name__}",
                               "check the network connection") from exc
        # The probe failed too: report it the way the metadata requests do.
        if status == 404:
            raise ModelNotFound(f"{what} not found (HTTP 404)", "check the URL")
        request(client, "GET", url, headers={"Range": PROBE_RANGE}, what=what, hint_401=ACCESS_HINT)
        return None

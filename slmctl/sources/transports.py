"""Picks the transport for a source reference; the only place that reads the transport environment.

The environment is a mapping passed in (never ``os.environ`` directly): ``HF_ENDPOINT`` and ``HF_TOKEN``
(``HUGGING_FACE_HUB_TOKEN`` as a fallback) for the Hub, ``SLMCTL_OLLAMA_REGISTRY`` as the registry of
``ollama://`` references that name no host.
"""

from __future__ import annotations

from collections.abc import Mapping

from slmctl.errors import UsageError
from slmctl.refs import HfPathRef, HfRepoRef, OllamaRef, UrlRef
from slmctl.sources.base import ClientFactory, Transport
from slmctl.sources.downloader.http import default_client
from slmctl.sources.hf import DEFAULT_REVISION, HfTransport
from slmctl.sources.ollama import OllamaTransport
from slmctl.sources.url import UrlTransport


def transport_for(
    ref: object,
    *,
    env: Mapping[str, str],
    client_factory: ClientFactory | None = None,
    insecure: bool = False,
    revision: str | None = None,
) -> Transport:
    """The transport that resolves ``ref`` (``revision`` pins Hugging Face references)."""
    factory = client_factory or default_client
    if isinstance(ref, HfRepoRef | HfPathRef):
        return HfTransport(
            factory,
            endpoint=env.get("HF_ENDPOINT") or None,
            token=env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None,
            revision=revision or DEFAULT_REVISION,
        )
    if isinstance(ref, OllamaRef):
        return OllamaTransport(factory, insecure=insecure, default_host=env.get("SLMCTL_OLLAMA_REGISTRY") or None)
    if isinstance(ref, UrlRef):
        return UrlTransport(factory, insecure=insecure)
    raise UsageError(f"no transport for {ref!r}", "use hf.co/..., hf://..., ollama://... or https://...")

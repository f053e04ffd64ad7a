"""Where models come from: source references (``hf.co/...``, ``hf://...``, ``ollama://...``, ``https://...``)."""

from slmctl.sources.refs import (
    OLLAMA_NAMESPACE,
    OLLAMA_REGISTRY,
    OLLAMA_TAG,
    HfPathRef,
    HfRepoRef,
    OllamaRef,
    SourceRef,
    UrlRef,
    parse_source,
)

__all__ = ["OLLAMA_NAMESPACE", "OLLAMA_REGISTRY", "OLLAMA_TAG", "HfPathRef", "HfRepoRef", "OllamaRef", "SourceRef",
           "UrlRef", "parse_source"]

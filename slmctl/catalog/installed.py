"""Whether a catalog variant is installed: its own files are in the store, whatever the models are named.

A variant whose catalog entry gives the file's ``sha256`` is installed when a stored model holds a file
of that digest. Without a published digest (most variants: Hugging Face publishes it only at pull time)
the variant is installed when a stored model was pulled from exactly the variant's source, because that
model's files are the ones a pull of the variant stores. A model that merely carries the catalog's name
(``slmctl import other.gguf --name qwen2.5:0.5b``) installs nothing. Pure: the store's content is passed
in as :class:`StoredContent` (built from the stored manifests by :meth:`StoredContent.of`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slmctl.catalog.catalog import CatalogEntry, Variant

if TYPE_CHECKING:  # typing only: the catalog does not depend on the store at run time
    from slmctl.store.manifest import Manifest

__all__ = ["StoredContent", "installed_sources", "variant_installed"]


@dataclass(frozen=True)
class StoredContent:
    """What the store holds, as far as the catalog cares: file digests and the sources models came from."""

    digests: frozenset[str] = frozenset()
    #: Lower-cased ``source.ref`` of the models pulled from a remote source.
    sources: frozenset[str] = frozenset()

    @classmethod
    def of(cls, manifests: Iterable[Manifest]) -> StoredContent:
        """The content of these stored manifests."""
        digests: set[str] = set()
        sources: set[str] = set()
        for manifest in manifests:
            digests.update(entry.digest for entry in manifest.files)
            if manifest.source.type in ("hf", "ollama", "url"):
                sources.add(manifest.source.ref.strip().lower())
        return cls(frozenset(digests), frozenset(sources))


def variant_installed(variant: Variant, stored: StoredContent) -> bool:
    """Whether the files of ``variant`` are in the store (see the module docstring)."""
    if variant.sha256:
        return f"sha256:{variant.sha256}" in stored.digests
    return variant.source.strip().lower() in stored.sources


def installed_sources(entry: CatalogEntry, stored: StoredContent) -> set[str]:
    """The ``source`` of every installed variant of ``entry`` (what :func:`choose_variant` takes as ``installed``)."""
    return {variant.source for variant in entry.variants if variant_installed(variant, stored)}

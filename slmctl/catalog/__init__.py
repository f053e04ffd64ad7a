"""The model catalog (shipped ``catalog.json`` + the user's ``$SLMCTL_HOME/catalog.json``) and variant selection."""

from slmctl.catalog.catalog import (
    Alias,
    Catalog,
    CatalogEntry,
    CatalogFile,
    Variant,
    load_catalog,
    looks_like_quant,
    normalize_quant,
    size_class_of,
)
from slmctl.catalog.installed import StoredContent, installed_sources, variant_installed
from slmctl.catalog.select import Selection, choose_variant, resolve_quant, select_variant

__all__ = ["Alias", "Catalog", "CatalogEntry", "CatalogFile", "Selection", "StoredContent", "Variant", "choose_variant",
           "installed_sources", "load_catalog", "looks_like_quant", "normalize_quant", "resolve_quant",
           "select_variant", "size_class_of", "variant_installed"]

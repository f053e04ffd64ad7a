"""Knowledge documents of the Modelfile ``FILE`` instruction: reading their text.

Plain text formats (text, Markdown, reStructuredText, CSV, JSON, YAML, HTML source) are read as UTF-8;
PDF files through pypdf. The text becomes part of the model's system context; anything else is
refused with a clear error naming the file.
"""

from __future__ import annotations

from pathlib import Path

from slmctl.errors import InvalidModelFile

TEXT_SUFFIXES = {"", ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".html",
                 ".htm", ".xml", ".log", ".ini", ".toml"}
_HINT = "FILE takes text, Markdown or PDF documents"


def read_document(path: Path) -> str:
    """The text of a knowledge document (UTF-8 text or PDF)."""
    if not path.is_file():
        raise InvalidModelFile(f"FILE {path}: no such file", "paths in a Modelfile are relative to its folder")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        return _pdf_text(path)
    if suffix not in TEXT_SUFFIXES:
        raise InvalidModelFile(f"FILE {path}: unsupported document type {suffix!r}", _HINT)
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidModelFile(f"FILE {path}: not UTF-8 text ({exc.reason} at byte {exc.start})", _HINT) from exc


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover - a dependency
        raise InvalidModelFile(f"FILE {path}: reading PDF needs pypdf ({exc})") from exc
    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise InvalidModelFile(f"FILE {path}: cannot read this PDF: {exc}", _HINT) from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise InvalidModelFile(f"FILE {path}: the PDF has no extractable text (a scanned document?)",
                               "convert it to text first (OCR)")
    return text

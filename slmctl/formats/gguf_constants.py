"""The GGUF format's constant tables, taken from the ``gguf`` package without its numpy-based half.

``import gguf`` (even ``import gguf.constants``) runs the package's ``__init__``, which imports its
reader, writer and numpy: ~0.14 s on every ``import``, ``pull`` and ``show`` that only needs the tables.
``gguf/constants.py`` itself is plain Python with no imports beyond the standard library, so this module
executes that one file under a private name (or reuses it when the package is already imported) and
re-exports what slmctl's header reader uses. It also owns the scalar encodings of the GGUF spec.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

_PRIVATE_NAME = "slmctl._gguf_constants"


def _constants() -> ModuleType:
    loaded = sys.modules.get("gguf.constants") or sys.modules.get(_PRIVATE_NAME)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("gguf")
    if package is None or not package.submodule_search_locations:
        raise ImportError("the 'gguf' package is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "constants.py"
    spec = importlib.util.spec_from_file_location(_PRIVATE_NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PRIVATE_NAME] = module  # enums and dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


_c = _constants()
GGML_QUANT_SIZES: dict = _c.GGML_QUANT_SIZES
GGUF_DEFAULT_ALIGNMENT: int = _c.GGUF_DEFAULT_ALIGNMENT
GGMLQuantizationType = _c.GGMLQuantizationType
GGUFValueType = _c.GGUFValueType
LlamaFileType = _c.LlamaFileType

#: Little-endian encodings of the GGUF scalar value types (the spec's table).
SCALARS: dict[int, struct.Struct] = {
    int(GGUFValueType[name]): struct.Struct("<" + code)
    for name, code in (("UINT8", "B"), ("INT8", "b"), ("UINT16", "H"), ("INT16", "h"), ("UINT32", "I"),
                       ("INT32", "i"), ("FLOAT32", "f"), ("UINT64", "Q"), ("INT64", "q"), ("FLOAT64", "d"),
                       ("BOOL", "?"))
}

__all__ = ["GGML_QUANT_SIZES", "GGUF_DEFAULT_ALIGNMENT", "SCALARS", "GGMLQuantizationType", "GGUFValueType",
           "LlamaFileType"]

"""slmctl: run small language models locally on llama.cpp (GGUF) and ONNX Runtime GenAI (ONNX)."""

__version__ = "0.1.0"

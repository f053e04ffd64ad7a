"""The Ollama registry's layer vocabulary: which ``application/vnd.ollama.image.<name>`` layer is what.

An Ollama manifest lists the weights (``model``: a GGUF file) and Modelfile layers under Ollama's names.
Those names are slmctl's layer kinds of the same name (:data:`slmctl.store.layers.LAYER_ORDER`; only
``file`` is slmctl's own, Ollama has no FILE), so the pull service stores a layer the transport returns
under its kind. The transport keeps the text layers of :data:`OLLAMA_TEXT_KINDS` (messages, adapters and
projectors are not taken over). Pure data and one function: no I/O.
"""

from __future__ import annotations

#: Ollama registry layers: ``application/vnd.ollama.image.<name>``.
OLLAMA_MEDIA_PREFIX = "application/vnd.ollama.image."
#: The Ollama layer holding the weights (a GGUF file): the model's file, not a Modelfile layer.
OLLAMA_MODEL_MEDIA = OLLAMA_MEDIA_PREFIX + "model"
#: The Modelfile layers Ollama has, in slmctl's layer order (each is a slmctl layer kind of that name).
OLLAMA_KINDS: tuple[str, ...] = ("template", "system", "params", "messages", "license", "adapter")
#: Ollama's media type of each kind Ollama has.
OLLAMA_MEDIA_TYPES: dict[str, str] = {kind: OLLAMA_MEDIA_PREFIX + kind for kind in OLLAMA_KINDS}
#: The Ollama layers a pull keeps, as text (messages, adapters and projectors are not taken over).
OLLAMA_TEXT_KINDS: tuple[str, ...] = ("template", "system", "license", "params")

__all__ = ["OLLAMA_KINDS", "OLLAMA_MEDIA_PREFIX", "OLLAMA_MEDIA_TYPES", "OLLAMA_MODEL_MEDIA", "OLLAMA_TEXT_KINDS",
           "ollama_layer_kind"]


def ollama_layer_kind(media_type: object) -> str | None:
    """What an Ollama registry layer is: ``"model"`` (the weights), the slmctl kind it maps to, or None
    (not an Ollama layer, or one slmctl has no kind for, such as ``projector``)."""
    if not isinstance(media_type, str) or not media_type.startswith(OLLAMA_MEDIA_PREFIX):
        return None
    if media_type == OLLAMA_MODEL_MEDIA:
        return "model"
    name = media_type[len(OLLAMA_MEDIA_PREFIX):]
    return name if OLLAMA_MEDIA_TYPES.get(name) == media_type else None

"""Structured output: which JSON schemas slmctl can enforce, and the grammar that enforces them.

A generation with a schema that ends because the model finished (``done_reason == "stop"``) is a
JSON document valid against the schema. GGUF models get a llama.cpp grammar built from the schema
(:mod:`.gbnf`, :mod:`.converter`); ONNX models pass the same schema to onnxruntime-genai's guidance.
Both see only schemas that passed :func:`.schema.check_json_format`, which refuses (UsageError: exit
2, HTTP 400, naming the keyword and its JSON pointer) anything outside the subset:

* ``type`` (one or a list), ``enum``, ``const`` (with at most ``type`` beside them), ``anyOf``,
  ``oneOf`` (only when its branches are provably exclusive), local ``$ref`` into ``$defs`` /
  ``definitions`` (recursion allowed through properties and items), boolean schemas;
* objects: ``properties``, ``required`` (names declared in ``properties``), ``additionalProperties``;
* arrays: ``items``, ``prefixItems``, ``minItems``/``maxItems``;
* strings: ``minLength``/``maxLength``, ``pattern`` (:mod:`.patterns`), ``format`` date, time,
  date-time, uuid;
* integers and numbers: ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``;
* annotations (title, description, default, examples, $schema, $id, $comment, deprecated, readOnly,
  writeOnly, discriminator, ``x-*``).

Gaps of llama-cpp-python 0.3.36's ``SchemaConverter`` closed in :mod:`.converter` (each one let an
invalid document through): numeric bounds ignored; literals (enum/const, property names) with a
backslash or a newline came out as other or invalid JSON; strings admitted raw control characters
and counted an escaped surrogate pair as two characters; ``minItems``/``maxItems`` ignored without
``items``; a ``type`` list dropped every other keyword; ``items`` beside ``prefixItems`` replaced
it; an "additional" property could repeat (and so override) a declared one, also through an
escape; a property named ``*`` was taken for the additional ones; ``$ref`` rules were named by the
last path segment and reused any rule of that name; ``date`` admitted 2023-02-31; ``pattern``'s
``.`` and classes could write a raw quote, and its escapes (``\\d``) broke the grammar; typeless or
annotation-only schemas crashed it. The rest it ignores (``allOf`` beyond properties, ``oneOf``
exclusivity, keywords beside ``$ref``/``anyOf``/``enum``, ``required`` of undeclared names,
``multipleOf``, ``uniqueItems``, ...) is refused.
"""

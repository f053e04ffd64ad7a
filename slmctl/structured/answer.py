"""Whether an answer asked for as JSON (``--format``, a REPL ``/set format``) is the JSON it promised.

Pure: it reads the text and how the generation ended, so ``run`` and the REPL give the same verdict.
"""

from __future__ import annotations

import json


def format_problem(json_format: str | dict[str, object] | None, text: str, done_reason: str | None,
                   eval_count: int, *, num_predict: int = -1) -> str | None:
    """Why an answer asked for with ``--format`` is not the JSON it promised; None when it is.

    A generation that ended on its token limit (``done_reason`` "length": ``--max-tokens``/``num_predict``
    or the end of the context) is cut off even when what it printed happens to parse.
    """
    if json_format is None:
        return None
    what = "JSON" if json_format == "json" else "JSON for the --format schema"
    try:
        json.loads(text)
        parse_error = None
    except ValueError as exc:
        parse_error = exc
    if done_reason == "length":
        if 0 <= num_predict <= eval_count:
            cause = f"the --max-tokens / num_predict limit of {num_predict}"
            fix = "raise --max-tokens"
        else:
            cause = "the end of the context"
            fix = "shorten the prompt or raise --param num_ctx"
        verdict = f"it is not complete {what}" if parse_error else f"it may not be complete {what}"
        return f"the answer was cut off after {eval_count} token(s) by {cause}: {verdict} ({fix})"
    if parse_error is not None:
        return f"the answer is not valid {what} ({parse_error})"
    return None

"""``python -m slmctl.services.bench.worker JSON``: one benchmark sample in a fresh process
(``slmctl bench --isolate``).

JSON is ``{"config": <BenchConfig>, "repetition": N}``; the model store is ``$SLMCTL_HOME``'s. The worker
prints exactly one JSON line on stdout: ``{"sample": <Sample>}``, or ``{"error": {"type", "message",
"hint"}}`` (then it exits with the error's exit code). Runtime logs go to stderr.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = sys.stdout
    try:
        from slmctl.engine import Engine
        from slmctl.errors import ExitCode, SlmctlError, UsageError
        from slmctl.services.bench.model import BenchConfig
        from slmctl.services.bench.runner import run_sample
        from slmctl.settings import Settings
        from slmctl.store import ModelStore

        try:
            if len(args) != 1:
                raise UsageError("usage: python -m slmctl.services.bench.worker "
                                 "'{\"config\": {...}, \"repetition\": 0}'")
            try:
                request = json.loads(args[0])
                config = BenchConfig.model_validate(request["config"])
                repetition = int(request.get("repetition", 0))
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"invalid worker request: {exc}") from None
            settings = Settings.from_env()
            sample = run_sample(Engine(ModelStore(settings.models_dir)), config, repetition)
        except SlmctlError as error:
            out.write(json.dumps({"error": {"type": type(error).__name__, "message": error.message,
                                            "hint": error.hint}}) + "\n")
            if error.details:
                sys.stderr.write(error.details.rstrip() + "\n")
            return int(error.exit_code)
        except KeyboardInterrupt:
            return int(ExitCode.INTERRUPTED)
        out.write(json.dumps({"sample": sample.model_dump(mode="json")}) + "\n")
        out.flush()
        return 0
    except Exception as error:  # noqa: BLE001 - the parent reports the stderr tail
        import traceback

        traceback.print_exc(file=sys.stderr)
        out.write(json.dumps({"error": {"type": "OperationFailed",
                                        "message": f"unexpected failure: {type(error).__name__}: {error}",
                                        "hint": None}}) + "\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())

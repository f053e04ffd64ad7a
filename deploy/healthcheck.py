#!/opt/slmctl/bin/python
"""Container HEALTHCHECK for ``slmctl serve``: exit 0 when ``GET /api/health`` answers 200, else 1.

The image runs it as ``/opt/slmctl/bin/python /usr/local/bin/slmctl-healthcheck`` (no curl in a slim
image). It asks ``http://127.0.0.1:11434/api/health`` unless ``SLMCTL_HEALTHCHECK_URL`` names another
address (a server started with another ``--host`` port, or ``https://`` with ``--tls-cert``: the
certificate is then not checked, since the probe only asks whether the process serves).
``/api/health`` never needs an API key, so the probe works with auth on.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:11434/api/health"


def main() -> int:
    url = os.environ.get("SLMCTL_HEALTHCHECK_URL") or DEFAULT_URL
    context = ssl._create_unverified_context() if url.startswith("https:") else None  # noqa: S323 - liveness only
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as answer:  # noqa: S310 - fixed scheme
            ok = answer.status == 200
            body = answer.read(200).decode("utf-8", "replace")
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{'healthy' if ok else 'unhealthy'}: {url}: {body}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The security settings of ``slmctl serve``: auth, TLS, the audit log and prompt logging.

Owns their names (flags, ``SLMCTL_*`` variables, ``--config`` keys), their parsing and checking
(:func:`security_config`: a certificate and its key both given, readable and matching), and the rule
for when auth is on: always with ``--auth``, never with ``--no-auth``, else on unless the server binds
a loopback address (:func:`is_loopback`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmctl.errors import UsageError

#: ``--config`` keys (and serve settings) this module owns; their ``SLMCTL_*`` variables are in
#: :data:`slmctl.settings.SERVE_ENV`.
SECURITY_KEYS = ("auth", "tls_cert", "tls_key", "audit_log", "audit_max_size", "log_prompts")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30,
          "gib": 2**30, "ti": 2**40, "tib": 2**40}


@dataclass(frozen=True)
class SecurityConfig:
    #: True/False: ``--auth``/``--no-auth``; None: on unless the server binds a loopback address.
    auth: bool | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A file, ``-`` for standard output, None for ``$SLMCTL_HOME/audit.jsonl``.
    audit_log: str | None = None
    #: Rotate the audit file before it passes this many bytes (0: never).
    audit_max_size: int = 10_000_000
    #: Put prompts and answers in the audit log (``generate`` events).
    log_prompts: bool = False

    def auth_on(self, host: str) -> bool:
        return self.auth if self.auth is not None else not is_loopback(host)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only reaches this machine (``127.0.0.0/8``, ``::1``, ``localhost``);
    anything else, names included, counts as reachable from the network."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def parse_size(value: Any) -> int:
    """Bytes from a size such as ``10MB`` or ``512KiB`` (decimal and binary units), or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = _SIZE.match(str(value))
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"invalid size {value!r}: use bytes or a size such as 10MB, 512KiB")
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < 0:
        raise ValueError(f"invalid size {value!r}")
    return size


def security_config(values: dict[str, Any]) -> SecurityConfig:
    """Take this module's settings out of ``values`` (resolved flags, environment and file) and check them."""
    raw = {key: values.pop(key) for key in SECURITY_KEYS if key in values}
    try:
        config = SecurityConfig(
            auth=parse_bool(raw["auth"], "auth") if raw.get("auth") is not None else None,
            tls_cert=Path(raw["tls_cert"]).expanduser() if raw.get("tls_cert") else None,
            tls_key=Path(raw["tls_key"]).expanduser() if raw.get("tls_key") else None,
            audit_log=str(raw["audit_log"]) if raw.get("audit_log") else None,
            audit_max_size=parse_size(raw["audit_max_size"]) if raw.get("audit_max_size") is not None
            else SecurityConfig.audit_max_size,
            log_prompts=parse_bool(raw.get("log_prompts", False), "log_prompts"))
    except ValueError as exc:
        raise UsageError(f"invalid serve setting: {exc}", "see 'slmctl serve --help'") from None
    _check_tls(config)
    return config


def _check_tls(config: SecurityConfig) -> None:
    if (config.tls_cert is None) != (config.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together", "give both: the certificate (chain) and its key")
    if config.tls_cert is None or config.tls_key is None:
        return
    import ssl

    for path in (config.tls_cert, config.tls_key):
        if not path.is_file():
            raise UsageError(f"no such file: {path}", "give the PEM files of the server's certificate and key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot use the certificate {config.tls_cert} with the key {config.tls_key}: {exc}",
                         "both must be PEM files, the key unencrypted and matching the certificate") from None

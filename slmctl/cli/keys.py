"""``slmctl keys create|list|revoke``: the API keys ``slmctl serve`` accepts (see :mod:`slmctl.security.keys`).

A new key is printed once, alone on stdout (so ``KEY=$(slmctl keys create ...)`` captures it) and stored
only as a salted scrypt digest; ``list`` never shows a key. Creating and revoking are audit events,
written to ``SLMCTL_AUDIT_LOG`` when it names a file, else to ``$SLMCTL_HOME/audit.jsonl`` (rotated at
``SLMCTL_AUDIT_MAX_SIZE``, as the server does). A running server sees the change on its next request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import Enum
from typing import Any

import typer

from slmctl.cli.usage import Command, Group

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class RoleName(str, Enum):
    user = "user"
    admin = "admin"


keys_app = typer.Typer(
    name="keys",
    cls=Group,
    help="Manage the API keys of 'slmctl serve': create (shown once), list, revoke.",
    epilog="Examples:\n\n  slmctl keys create alice --role user --expires 90d\n\n"
    "  slmctl keys create ops --role admin\n\n  slmctl keys list\n\n  slmctl keys list --json\n\n"
    "  slmctl keys revoke alice\n\n"
    "Roles: user may generate, chat, embed, list, show and ps; admin may also pull, create, copy, delete, "
    "upload blobs, load and unload models and read the audit log (GET /api/audit). Clients send the key as "
    "'Authorization: Bearer KEY' (OpenAI SDKs: api_key=KEY; ollama: Client(headers=...)) or 'x-api-key: KEY'; "
    "'slmctl ps' and 'slmctl stop' send SLMCTL_API_KEY. Keys live hashed in $SLMCTL_HOME/keys.json (mode 0600), or in "
    "the file SLMCTL_KEYS_FILE names.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def parse_expiry(text: str) -> timedelta | None:
    """``90d``, ``12h``, ``2w``, ``1y``, ``3600`` (seconds) or ``never``."""
    value = text.strip().lower()
    if value in ("never", "0", ""):
        return None
    match = re.fullmatch(r"(\d+)\s*([smhdwy]?)", value)
    if match is None or int(match.group(1)) == 0:
        from slmctl.errors import UsageError

        raise UsageError(f"invalid --expires {text!r}", "use a duration such as 30d, 12h, 2w, 1y, or never")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2) or "s"])


def _audit(ctx: typer.Context, event: str, **fields: Any) -> None:
    import getpass

    from slmctl.security.audit import DEFAULT_MAX_BYTES, STDOUT, AuditLog
    from slmctl.security.config import parse_size

    destination = ctx.obj.env.get("SLMCTL_AUDIT_LOG", "").strip() or None
    try:
        max_bytes = parse_size(ctx.obj.env.get("SLMCTL_AUDIT_MAX_SIZE") or DEFAULT_MAX_BYTES)
    except ValueError:
        max_bytes = DEFAULT_MAX_BYTES  # the server reports a bad value; the key's audit line is written anyway
    audit = AuditLog.at(None if destination == STDOUT else destination, ctx.obj.settings.home, max_bytes)
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): the audit line still counts
        user = None
    audit.write(event, client="cli", outcome="ok", user=user, **fields)


@keys_app.command("create", cls=Command, help="Create an API key NAME and print it (the only time it is shown).",
                  epilog="Examples:\n\n  slmctl keys create alice --role user --expires 90d\n\n"
                  "  KEY=$(slmctl keys create ci --role user --expires 30d)\n\n  slmctl keys create ops --role admin")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A name for the key (its holder or use): letters, digits, . _ @ -.",
                               show_default=False),
    role: RoleName = typer.Option(RoleName.user, "--role", help="user: generate, chat, embed, read; admin: also "
                                  "change models and read the audit log."),
    expires: str = typer.Option("never", "--expires", metavar="DURATION", help="Lifetime: 90d, 12h, 2w, 1y, or "
                                "never."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON object with the key and its details."),
) -> None:
    from slmctl.cli.output import print_json
    from slmctl.security.keys import Role

    lifetime = parse_expiry(expires)
    entry, token = _key_store(ctx).create(name, Role(role.value), lifetime)
    _audit(ctx, "key_created", key=entry.name, role=entry.role.value,
           expires_at=entry.public()["expires_at"])
    if json_output:
        print_json({**entry.public(), "key": token}, ctx.obj.stdout)
    else:
        ctx.obj.stdout.write(token + "\n")
        ctx.obj.stdout.flush()
    ctx.obj.stderr.write(f"created {entry.role.value} key '{entry.name}'"
                         + (f", expires {entry.public()['expires_at']}" if entry.expires_at else "")
                         + ": store it now, it cannot be shown again\n")


@keys_app.command("list", cls=Command, help="List the API keys: name, role, created, last used, expiry, status "
                  "(never the keys).", epilog="Examples:\n\n  slmctl keys list\n\n  slmctl keys list --json")
def list_keys(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array."),
    show_all: bool = typer.Option(False, "--all", help="Include revoked keys."),
) -> None:
    from slmctl.cli.output import print_json, table

    keys = [k.public() for k in _key_store(ctx).load() if show_all or k.revoked_at is None]
    if json_output:
        print_json(keys, ctx.obj.stdout)
        return
    rows = [[k["name"], k["role"], k["created_at"], k["last_used_at"] or "never", k["expires_at"] or "never",
             k["status"]] for k in sorted(keys, key=lambda k: k["name"])]
    table(["NAME", "ROLE", "CREATED", "LAST USED", "EXPIRES", "STATUS"], rows, ctx.obj.stdout)


@keys_app.command("revoke", cls=Command, help="Revoke the API key NAME: refused from the server's next request on.",
                  epilog="Examples:\n\n  slmctl keys revoke alice")
def revoke(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The key's name (see 'slmctl keys list').", show_default=False),
) -> None:
    entry = _key_store(ctx).revoke(name)
    _audit(ctx, "key_revoked", key=entry.name, role=entry.role.value)
    ctx.obj.stderr.write(f"revoked key '{entry.name}'\n")


def _key_store(ctx: typer.Context) -> Any:
    from slmctl.security.keys import KeyStore

    settings = ctx.obj.settings
    return KeyStore(settings.home, path=settings.keys_file)

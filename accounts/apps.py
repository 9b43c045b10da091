import contextlib
from pathlib import Path

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Teams, memberships, API tokens and the audit trail."""

    name = "accounts"

    def ready(self):
        from django.db.backends.signals import connection_created

        from accounts import schema  # noqa: F401  (registers the OpenAPI auth extension)

        connection_created.connect(_private_sqlite_file, dispatch_uid="accounts.private_sqlite")


def _private_sqlite_file(sender, connection, **kwargs) -> None:
    """The SQLite file holds password hashes and sessions: readable by this user only."""
    if connection.vendor != "sqlite":
        return
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    with contextlib.suppress(OSError):  # not ours (a shared file the operator set up)
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(0o600)

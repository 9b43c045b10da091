from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Teams, memberships, API tokens and the audit trail."""

    name = "accounts"

    def ready(self):
        from accounts import schema  # noqa: F401  (registers the OpenAPI auth extension)

"""A small OpenID Connect provider (django-oauth-toolkit) that the single sign-on tests start as
a second Django process. Test-only: its signing key is generated when a test starts it."""

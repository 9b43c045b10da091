"""Where target connection secrets may live on a worker.

Targets never store secrets: their settings name a file (a kubeconfig, TLS keys) or an
environment variable that holds such a file's path. Those names come from team admins, so they
are confined: a file must resolve (symlinks followed) inside CREDENTIALS_DIR, and a variable
must carry the MODELDECK_TARGET_ prefix — a team cannot point its target at another team's
kubeconfig, at the worker's own files, or at SECRET_KEY.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.conf import settings

ENVIRONMENT_PREFIX = "MODELDECK_TARGET_"
_ENVIRONMENT_NAME = re.compile(rf"^{ENVIRONMENT_PREFIX}[A-Z0-9_]{{1,100}}$")


class CredentialError(ValueError):
    """A credential reference that points outside what targets may use."""


def credentials_dir() -> Path:
    return Path(settings.TARGET_CREDENTIALS_DIR).resolve()


def credential_file(value: object) -> str:
    """The resolved path of a credential file named by a target setting, or CredentialError."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 4096:
        raise CredentialError("must be a file path.")
    folder = credentials_dir()
    path = Path(value)
    if not path.is_absolute():
        raise CredentialError(f"must be an absolute path inside {folder} (TARGET_CREDENTIALS_DIR).")
    resolved = path.resolve()
    if not resolved.is_relative_to(folder):
        raise CredentialError(f"must be a file inside {folder} (TARGET_CREDENTIALS_DIR).")
    return str(resolved)


def credential_environment(name: object) -> str:
    """An environment variable a target may read a credential path from, or CredentialError."""
    if not isinstance(name, str) or not _ENVIRONMENT_NAME.match(name):
        raise CredentialError(
            f"must name an environment variable starting with {ENVIRONMENT_PREFIX} "
            "(A-Z, 0-9 and _)."
        )
    return name


def credential_file_from_environment(name: str) -> str:
    """The contained credential file named by the variable `name`, checked when it is used."""
    return credential_file(os.environ.get(credential_environment(name), ""))


def team_scope(team_name: str) -> tuple[Path, str]:
    """The credentials subfolder and variable prefix of one team: its targets may name only
    files under CREDENTIALS_DIR/<team name>/ and variables MODELDECK_TARGET_<TEAM>_*."""
    token = re.sub(r"[^A-Z0-9]", "_", team_name.upper())
    root = credentials_dir()
    folder = (root / team_name).resolve()
    if folder == root or not folder.is_relative_to(root):
        raise CredentialError("cannot be used: this team's name is not a folder name.")
    return folder, f"{ENVIRONMENT_PREFIX}{token}_"


def check_team_scope(team_name: str, *, files: list[str], variables: list[str]) -> None:
    """CredentialError unless every named file and variable belongs to `team_name`."""
    folder, prefix = team_scope(team_name)
    for value in files:
        if not Path(credential_file(value)).is_relative_to(folder):
            raise CredentialError(f"must be a file inside {folder} (this team's credentials).")
    for name in variables:
        if not credential_environment(name).startswith(prefix):
            raise CredentialError(f"must start with {prefix} (this team's variables).")

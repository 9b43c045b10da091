"""Where the client finds the server and its token: MODELDECK_URL and MODELDECK_TOKEN, else a
profile in a TOML file (MODELDECK_CONFIG, default ~/.config/modeldeck/config.toml):

    [profiles.default]
    url = "https://modeldeck.example.com"
    token = "md_..."

MODELDECK_PROFILE (or --profile) picks another profile. Variables win over the file."""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The client cannot tell which server to talk to, or with which token."""


@dataclass(frozen=True)
class Settings:
    url: str
    token: str


def default_config_path() -> Path:
    if os.environ.get("MODELDECK_CONFIG"):
        return Path(os.environ["MODELDECK_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "modeldeck" / "config.toml"


def _profile(path: Path, name: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        # The file holds a bearer token: say so rather than silently use a readable secret.
        print(f"warning: {path} is readable by other users; chmod 600 it.", file=sys.stderr)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    profiles = document.get("profiles", {})
    profile = profiles.get(name) if isinstance(profiles, dict) else None
    if profile is None:
        return {}
    if not isinstance(profile, dict):
        raise ConfigError(f"[profiles.{name}] in {path} must be a table.")
    return {key: str(value) for key, value in profile.items() if key in {"url", "token"}}


def load_settings(*, profile: str | None = None, config_path: Path | None = None) -> Settings:
    """The server URL and token from the environment, filled in from the profile file."""
    name = profile or os.environ.get("MODELDECK_PROFILE") or "default"
    path = config_path or default_config_path()
    from_file = _profile(path, name)
    if profile and not from_file:
        raise ConfigError(f"No profile {name!r} in {path}.")
    url = os.environ.get("MODELDECK_URL") or from_file.get("url", "")
    token = os.environ.get("MODELDECK_TOKEN") or from_file.get("token", "")
    if not url:
        raise ConfigError(f"Set MODELDECK_URL or add url to [profiles.{name}] in {path}.")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"MODELDECK_URL must start with http:// or https://; got {url!r}.")
    if not token:
        raise ConfigError(f"Set MODELDECK_TOKEN or add token to [profiles.{name}] in {path}.")
    return Settings(url=url.rstrip("/"), token=token)

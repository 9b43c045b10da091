"""Modeldeck's typed client and the `modeldeck` CLI (no Django)."""

from modeldeck_client.client import ApiError, Client, WaitTimeout
from modeldeck_client.config import ConfigError, Settings, load_settings

__all__ = ["ApiError", "Client", "ConfigError", "Settings", "WaitTimeout", "load_settings"]

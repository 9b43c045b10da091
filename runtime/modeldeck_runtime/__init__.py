"""Modeldeck serving runtime: the version server and the gateway, with no Django import."""

__version__ = "0.1.0"

"""Manifests signed for one device: canonical JSON + HMAC-SHA256 with the device's key.

The agent (runtime/modeldeck_runtime/agent.py) checks the same bytes the same way; keep both
sides in step (sorted keys, no spaces, UTF-8).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def canonical(manifest: dict[str, Any]) -> bytes:
    """The exact bytes a signature covers."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(manifest: dict[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 of a manifest."""
    return hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()

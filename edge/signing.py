"""Manifests signed for one device: HMAC-SHA256 with the device's key over the canonical bytes
the runtime's wire protocol defines (modeldeck_runtime.protocol.canonical), which the agent checks.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from modeldeck_runtime.protocol import canonical


def sign(manifest: dict[str, Any], key: bytes) -> str:
    """The hex HMAC-SHA256 of a manifest."""
    return hmac.new(key, canonical(manifest), hashlib.sha256).hexdigest()

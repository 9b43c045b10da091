"""Messages shown to users never name the server's folders: the temp directory, var/, the
checkout, the Python installation. A path under one of them is cut to its last part."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from django.conf import settings

_PLACEHOLDER = "…"


def _roots() -> list[str]:
    candidates = [
        tempfile.gettempdir(),
        "/tmp",  # noqa: S108 - named only to be hidden
        "/var/tmp",  # noqa: S108
        str(Path.home()),
        sys.prefix,
        sys.base_prefix,
    ]
    for name in (
        "VAR_DIR", "BASE_DIR", "ARTIFACT_ROOT", "RUNTIME_DIR", "STATIC_ROOT",
        "TARGET_CREDENTIALS_DIR", "MODELDECK_WHEELHOUSE",
    ):  # fmt: skip
        value = getattr(settings, name, None)
        if value:
            candidates.append(str(value))
    roots = set()
    for candidate in candidates:
        for form in (candidate, os.path.realpath(candidate)):
            form = form.rstrip("/")
            if len(form) > 1:
                roots.add(form)
    # Longest first, so /work/app/var wins over /work/app.
    return sorted(roots, key=len, reverse=True)


@lru_cache(maxsize=8)
def _pattern(roots: tuple[str, ...]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(root) for root in roots)
    # A root, then path characters up to a quote, space or the end of the path.
    return re.compile(rf"(?:{alternatives})(?![\w.-])(?P<rest>/[^\s'\"`,;:)\]]*)?")


def without_server_paths(text: str) -> str:
    """`text` with every path under a server folder shortened to its last part."""
    if not text:
        return text

    def shorten(match: re.Match[str]) -> str:
        name = (match.group("rest") or "").rstrip("/").rsplit("/", 1)[-1]
        return f"{_PLACEHOLDER}/{name}" if name else _PLACEHOLDER

    return _pattern(tuple(_roots())).sub(shorten, text)

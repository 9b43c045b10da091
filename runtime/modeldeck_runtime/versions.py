"""How callers name a version: by number (`2`) or by full reference (`house-prices:2`).

Local and container targets serve a version under its full reference, edge devices under the
same reference (the agent passes it), and tritonclient users write `model_version="2"`. One rule
everywhere (server, gateway, agent, metrics labels): a served version is labelled with its full
reference, and a request may name it either way.
"""

from __future__ import annotations

from collections.abc import Iterable


def version_number(reference: str) -> str:
    """`house-prices:2` -> `2`; a bare `2` stays `2`."""
    return reference.rpartition(":")[2]


def names_version(requested: str, served: str) -> bool:
    """Whether a caller's version name denotes the served version.

    Equal names match; otherwise the numbers must be equal and at most one side may carry a
    model name (`2` matches `house-prices:2`, `fraud:2` does not).
    """
    if requested == served:
        return True
    if ":" in requested and ":" in served:
        return False
    return version_number(requested) == version_number(served) != ""


def resolve_version(requested: str, served: Iterable[str]) -> list[str]:
    """The served versions a caller's name denotes (several only when a bare number is shared)."""
    return [version for version in served if names_version(requested, version)]


def split_versioned_path(path: str) -> tuple[str, str, str] | None:
    """`/v2/models/{m}/versions/{v}[/rest]` -> (m, v, rest); None for any other path.

    The path is the decoded ASGI path (a reference's `:` may arrive as `%3A` on the wire).

    `rest` is "" (metadata), "ready" or "infer"; other tails are returned as they are so the
    caller can answer 404.
    """
    if not path.startswith("/v2/models/"):
        return None
    parts = path[len("/v2/models/") :].rstrip("/").split("/")
    if len(parts) < 3 or parts[1] != "versions" or not parts[0] or not parts[2]:
        return None
    return parts[0], parts[2], "/".join(parts[3:])

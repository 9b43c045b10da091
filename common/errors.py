"""The one domain error type that services raise and interfaces translate."""

from typing import Any


class ApplicationError(Exception):
    """A domain rule was broken; `message` is shown to people, `extra` holds field details.

    `status` lets a service say that the problem is not the caller's input (409 for a conflict,
    413 for a size cap) without interfaces needing to know each case.
    """

    def __init__(self, message: str, extra: dict[str, Any] | None = None, *, status: int = 400):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.status = status

"""API plumbing shared by every app: the error format and pagination (common/schema.py puts
both in the OpenAPI schema)."""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser as _DrfJSONParser
from rest_framework.response import Response

from common.errors import ApplicationError


class JSONParser(_DrfJSONParser):
    """DRF's JSON parser, but deep nesting (`[[[[…`) is bad input (400), not a 500: Python's
    decoder raises RecursionError, which DRF does not catch."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


class Pagination(PageNumberPagination):
    """Page-number pagination with a bounded, client-chosen page size."""

    page_size_query_param = "page_size"
    max_page_size = 500


def _first_message(detail) -> str:
    """Pick one readable sentence out of DRF's nested error detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            message = _first_message(value)
            return message if key in ("detail", "non_field_errors") else f"{key}: {message}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    """Answer every error as `{"error": "...", "detail": {...}}` with the right status."""
    if isinstance(exc, ApplicationError):
        return Response({"error": exc.message, "detail": exc.extra}, status=exc.status)
    if isinstance(exc, DjangoValidationError):
        messages = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(messages)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    # Imported here, not at the top: importing rest_framework.views resolves
    # DEFAULT_PARSER_CLASSES, which names this module's JSONParser, so a process that loads this
    # module first (celery beat's startup checks do) would fail on a circular import.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        body = {"error": _first_message(detail), "detail": fields}
    else:
        message = detail.get("detail", "") if isinstance(detail, dict) else str(detail)
        body = {"error": str(message) or "Request failed.", "detail": {}}
    response.data = body
    return response

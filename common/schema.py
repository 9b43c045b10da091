"""The OpenAPI schema's shared parts: the `{error, detail}` body documented on every 4xx, and
read-only fields marked nullable where the model can hold no value.

Kept apart from common/api.py: DRF loads that module while it reads its own settings, and
drf-spectacular's AutoSchema imports DRF's views, which would make the import circular.
"""

from django.core.exceptions import FieldDoesNotExist
from drf_spectacular.openapi import AutoSchema as _SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """Every 4xx answer: one readable sentence and, per field, what was wrong."""

    error = serializers.CharField()
    detail = serializers.DictField(child=serializers.JSONField())


# The 4xx statuses documented on every operation (with the error body), and those only an
# operation with a request body can answer.
ERROR_STATUSES = {
    "400": "Bad input (query or body); `error` says what to fix.",
    "401": "Not authenticated: send `Authorization: Bearer <token>` or sign in.",
    "403": "Authenticated, but the role in this team does not allow it.",
    "404": "No such object in the caller's teams.",
}
BODY_ERROR_STATUSES = {
    "409": "Conflicts with the current state (a duplicate name, a change already made).",
    "413": "The body is larger than allowed.",
    "415": "Only the documented content types are accepted.",
}


def _source_is_nullable(field: serializers.Field) -> bool:
    """Whether a model serializer's read-only field can answer null: some step of its source
    (`created_by`, `version.model.name`) is a nullable model field."""
    parent = getattr(field, "parent", None)
    model = getattr(getattr(parent, "Meta", None), "model", None)
    if model is None or field.source in ("*", None):
        return False
    for name in field.source.split("."):
        try:
            model_field = model._meta.get_field(name)
        except FieldDoesNotExist:
            return False
        if model_field.null:
            return True
        model = model_field.related_model
        if model is None:
            return False
    return False


class AutoSchema(_SpectacularAutoSchema):
    """drf-spectacular's schema, plus the `{error, detail}` body on every 4xx an operation can
    answer (so that a generated client can read errors and schema checks accept them), and
    nullable read-only fields (`created_by`, `approved_by`, `derived_from`) marked as such."""

    def _get_serializer_field_meta(self, field, direction):
        meta = super()._get_serializer_field_meta(field, direction)
        if (
            isinstance(field, serializers.Field)
            and field.read_only
            and not field.allow_null
            and _source_is_nullable(field)
        ):
            meta["nullable"] = True
        return meta

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        statuses = dict(ERROR_STATUSES)
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.update(BODY_ERROR_STATUSES)
        if getattr(self.view, "throttle_classes", None):
            statuses["429"] = "Too many requests; retry after the time `error` names."
        for code, description in statuses.items():
            if code not in responses:
                response = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["description"] = description
                responses[code] = response
        return responses


def paginated(serializer_class: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """The page shape of `common.api.Pagination` around `serializer_class`, for views that page
    by hand (function views): `{count, next, previous, results}` like every other list."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}ListSerializer",
        (serializers.Serializer,),
        {
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
            "__doc__": f"One page of {name} objects.",
        },
    )


# The query parameters of `common.api.Pagination`, for function views that page by hand.
PAGE_PARAMETERS = [
    OpenApiParameter("page", int, description="A page number within the paginated result."),
    OpenApiParameter("page_size", int, description="Results per page (at most 500)."),
]

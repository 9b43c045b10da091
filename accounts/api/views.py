from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import api_view
from rest_framework.response import Response

from accounts import selectors
from accounts.actor import Actor
from accounts.api.serializers import AuditEventSerializer, MeSerializer
from accounts.models import Team


@extend_schema(responses=MeSerializer)
@api_view(["GET"])
def me(request):
    """Who the caller is, and their role per team."""
    actor = Actor.from_request(request)
    names = dict(Team.objects.filter(pk__in=actor.team_ids).values_list("pk", "name"))
    return Response(
        {
            "username": request.user.get_username(),
            "teams": {names[team_id]: role for team_id, role in actor.roles.items()},
        }
    )


class AuditEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The audit trail of the caller's teams."""

    serializer_class = AuditEventSerializer

    def get_queryset(self):
        return selectors.audit_list_for_actor(
            actor=Actor.from_request(self.request),
            action=self.request.query_params.get("action", "")[:64],
        )

"""Forms for the accounts pages."""

from django import forms
from django.conf import settings

from accounts.models import Team


class TokenCreateForm(forms.Form):
    """A new API token for the current user in one of their teams."""

    team = forms.ModelChoiceField(queryset=Team.objects.none())
    name = forms.CharField(max_length=100)
    days = forms.IntegerField(
        min_value=1, max_value=settings.API_TOKEN_MAX_DAYS, initial=settings.API_TOKEN_DEFAULT_DAYS
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

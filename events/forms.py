"""Forms of the webhook pages (the services re-check everything they accept)."""

from django import forms

from events.models import EventKind


class WebhookForm(forms.Form):
    """A new webhook of one of the user's teams."""

    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=100)
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[choice for choice in EventKind.choices if choice[0] != EventKind.PING],
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

"""Forms of the monitoring pages (services re-check everything they accept)."""

from django import forms

from monitoring.models import AlertMetric, Comparator, WebhookEvent


class AlertRuleForm(forms.Form):
    """A new alert rule on one endpoint."""

    name = forms.CharField(max_length=100)
    metric = forms.ChoiceField(choices=AlertMetric.choices)
    comparator = forms.ChoiceField(choices=Comparator.choices, initial=Comparator.ABOVE)
    threshold = forms.FloatField(
        min_value=0, help_text="Rates and shares as 0–1 (0.05 = 5 %); latency in seconds."
    )
    window_minutes = forms.IntegerField(min_value=1, max_value=1440, initial=5)
    for_minutes = forms.IntegerField(
        min_value=0,
        max_value=1440,
        initial=2,
        help_text="How long the condition must hold before an alert opens (and stay clear "
        "before it resolves).",
    )


class WebhookForm(forms.Form):
    """A new webhook of one of the user's teams."""

    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    name = forms.CharField(max_length=100)
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=[choice for choice in WebhookEvent.choices if choice[0] != WebhookEvent.PING],
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

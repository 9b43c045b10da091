"""Forms of the monitoring pages (services re-check everything they accept)."""

from typing import Any

from django import forms

from common.errors import ApplicationError
from monitoring.experiments import GUARDRAIL_METRICS
from monitoring.models import (
    AlertMetric,
    Comparator,
    ExperimentMetric,
    Inconclusive,
    PolicyMetric,
    PolicyScope,
)
from monitoring.services.rollback_policies import MAX_CRITERIA

STICKY_CHOICES = [("header", "Request header"), ("cookie", "Cookie")]


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


# --- experiments and rollback policies ----------------------------------------------------------
# These forms only turn browser fields into the arguments of the services the API calls
# (`services.experiment_create`, `services.rollback_policy_set`); the services judge them.


def _add_service_error(form: forms.Form, error: ApplicationError, fields: dict[str, str]) -> None:
    """Show a service's error next to the field its `extra` names, else above the form."""
    field = next((fields[key] for key in error.extra if key in fields), None)
    form.add_error(field, error.message)


class ExperimentForm(forms.Form):
    """A new draft experiment; `service_arguments()` is what `experiment_create` takes."""

    endpoint = forms.ChoiceField()
    name = forms.CharField(max_length=100)
    description = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    control = forms.CharField(
        max_length=200, help_text="model:N or model@alias; usually what the endpoint serves now."
    )
    treatment = forms.CharField(max_length=200, help_text="The version to try against it.")
    treatment_percent = forms.IntegerField(
        initial=50, label="Treatment share (%)", help_text="1–99; the control gets the rest."
    )
    sticky_by = forms.ChoiceField(
        choices=[("", "No sticky key: every request is drawn anew"), *STICKY_CHOICES],
        required=False,
        label="Sticky key",
        help_text="Keep a caller on one arm by a request header or cookie.",
    )
    sticky_name = forms.CharField(max_length=64, required=False, label="Header or cookie name")
    metric = forms.ChoiceField(choices=ExperimentMetric.choices, label="Primary metric")
    guardrails = forms.MultipleChoiceField(
        choices=[(m.value, m.label) for m in ExperimentMetric if m in GUARDRAIL_METRICS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Guardrail metrics",
        help_text="The experiment fails if the treatment is proven worse on one of these "
        "(by more than 0.01 for the error rate, 0.05 s for latency).",
    )
    alpha = forms.FloatField(initial=0.05, label="α", help_text="The false-winner rate, 0–0.5.")
    power = forms.FloatField(initial=0.8, help_text="The chance to detect a real effect, 0–1.")
    minimum_effect = forms.FloatField(
        label="Minimum detectable effect",
        help_text="In the metric's unit: 0.02 = two points of accuracy or error rate; seconds "
        "for latency.",
    )
    planning_variance = forms.FloatField(
        required=False,
        help_text="The outcome's expected variance; accuracy and error rate assume 0.25, "
        "reward and latency need a number.",
    )
    auto_promote = forms.BooleanField(
        required=False, label="Promote the treatment automatically when it wins"
    )
    auto_stop_loser = forms.BooleanField(
        required=False, label="Give the control all traffic automatically when the treatment loses"
    )

    # The `extra` keys of the service's errors, and the field each one belongs to.
    SERVICE_FIELDS = {
        **{
            name: name
            for name in (
                "name", "control", "treatment", "metric", "guardrails", "treatment_percent",
                "alpha", "power", "minimum_effect", "planning_variance",
            )
        },
        "sticky": "sticky_name",
    }  # fmt: skip

    def __init__(self, *args, endpoints: list[str], versions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["endpoint"].choices = [(name, name) for name in endpoints]
        self.versions = versions
        for name in ("control", "treatment"):
            self.fields[name].widget.attrs.update(
                {"list": "experiment-versions", "placeholder": "model:N"}
            )

    def clean(self):
        data = super().clean()
        if data.get("sticky_by") and not data.get("sticky_name"):
            self.add_error("sticky_name", "Name the header or cookie that keeps callers sticky.")
        if data.get("sticky_name") and not data.get("sticky_by"):
            self.add_error("sticky_by", "Choose whether the name is a header or a cookie.")
        return data

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for `experiment_create` (all but actor and endpoint)."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "control": data["control"],
            "treatment": data["treatment"],
            "treatment_percent": data["treatment_percent"],
            "sticky": {data["sticky_by"]: data["sticky_name"]} if data["sticky_by"] else None,
            "metric": data["metric"],
            "guardrails": list(data["guardrails"]),
            "alpha": data["alpha"],
            "power": data["power"],
            "minimum_effect": data["minimum_effect"],
            "planning_variance": data["planning_variance"],
            "auto_promote": data["auto_promote"],
            "auto_stop_loser": data["auto_stop_loser"],
        }

    def add_service_error(self, error: ApplicationError) -> None:
        """Show what `experiment_create` refused."""
        _add_service_error(self, error, self.SERVICE_FIELDS)


class CriterionForm(forms.Form):
    """One row of a rollback policy; a row without a metric is left out."""

    metric = forms.ChoiceField(choices=[("", "—"), *PolicyMetric.choices], required=False)
    comparator = forms.ChoiceField(
        choices=[("", "worse direction"), *Comparator.choices], required=False, label="Fails when"
    )
    threshold = forms.FloatField(required=False)
    relative_to_control = forms.BooleanField(required=False, label="× the control")
    window_minutes = forms.IntegerField(required=False, initial=5, label="Window (minutes)")
    minimum_samples = forms.IntegerField(required=False, initial=100)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The rows sit in a table without <label>s: name each input for screen readers.
        row = (self.prefix or "").rsplit("-", 1)[-1]
        for name, field in self.fields.items():
            label = self[name].label
            field.widget.attrs["aria-label"] = (
                f"{label}, criterion {int(row) + 1}" if row.isdigit() else label
            )

    def clean(self):
        data = super().clean()
        if data.get("metric") and data.get("threshold") is None:
            self.add_error("threshold", "Give the threshold (a ratio when relative to control).")
        elif not data.get("metric") and data.get("threshold") is not None:
            self.add_error("metric", "Choose the metric this threshold is for.")
        return data

    def criterion(self) -> dict[str, Any] | None:
        """The criterion as `rollback_policy_set` takes it; blank fields keep its defaults."""
        data = self.cleaned_data
        if not data.get("metric"):
            return None
        criterion = {
            "metric": data["metric"],
            "threshold": data["threshold"],
            "relative_to_control": data["relative_to_control"],
        }
        for key in ("comparator", "window_minutes", "minimum_samples"):
            if data.get(key) not in (None, ""):
                criterion[key] = data[key]
        return criterion


CriterionFormSet = forms.formset_factory(
    CriterionForm, extra=0, max_num=MAX_CRITERIA, absolute_max=MAX_CRITERIA
)


class RollbackPolicyForm(forms.Form):
    """An endpoint's rollback policy with its criteria rows (a formset, `self.criteria`)."""

    failure_limit = forms.IntegerField(
        initial=1,
        label="Failing evaluations in a row before acting",
        help_text="1–100; evaluations run every minute and before every canary step.",
    )
    on_inconclusive = forms.ChoiceField(
        choices=Inconclusive.choices,
        initial=Inconclusive.PAUSE,
        label="When a criterion has too few samples",
    )
    scope = forms.ChoiceField(
        choices=PolicyScope.choices, initial=PolicyScope.ALWAYS, label="Active"
    )
    dry_run = forms.BooleanField(
        required=False, label="Dry run: record each evaluation, never roll back or pause"
    )
    is_enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    SERVICE_FIELDS = {"failure_limit": "failure_limit", "on_inconclusive": "on_inconclusive"}

    def __init__(self, data=None, *, policy=None):
        initial = {}
        rows: list[dict] = []
        if policy is not None:
            initial = {
                name: getattr(policy, name)
                for name in ("failure_limit", "on_inconclusive", "scope", "dry_run", "is_enabled")
            }
            rows = list(policy.criteria)
        super().__init__(data, initial=initial)
        # A few empty rows to add criteria without JavaScript; a blank metric drops a row.
        rows += [{}] * (min(MAX_CRITERIA, max(3, len(rows) + 2)) - len(rows))
        self.criteria = CriterionFormSet(data, initial=rows, prefix="criteria")
        self._positions: list[int] = []

    def is_valid(self) -> bool:
        form_valid = super().is_valid()
        rows_valid = self.criteria.is_valid()
        return form_valid and rows_valid

    def service_arguments(self) -> dict[str, Any]:
        """Keyword arguments for `rollback_policy_set` (all but actor and endpoint)."""
        criteria = []
        self._positions = []
        for index, row in enumerate(self.criteria.forms):
            criterion = row.criterion()
            if criterion is not None:
                criteria.append(criterion)
                self._positions.append(index)
        return {"criteria": criteria, **self.cleaned_data}

    def add_service_error(self, error: ApplicationError) -> None:
        """Show what `rollback_policy_set` refused, on the criterion row it names if any."""
        position = error.extra.get("criteria")
        if isinstance(position, int) and 0 < position <= len(self._positions):
            self.criteria.forms[self._positions[position - 1]].add_error(None, error.message)
        else:
            _add_service_error(self, error, self.SERVICE_FIELDS)

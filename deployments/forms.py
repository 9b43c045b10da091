"""Forms of the deployment pages; the services check the rules, forms only shape the input."""

import json

from django import forms

from deployments.models import Environment, TargetKind, VariantRole

REFERENCE_HELP = 'A version as "model:N" or "model@alias".'
FORCE_LABEL = "Force: apply even if the signature breaks this endpoint's clients (audited)"


class EndpointCreateForm(forms.Form):
    """A new endpoint serving one version at 100 %."""

    name = forms.CharField(max_length=40, help_text="Lowercase letters, digits and hyphens.")
    target = forms.ModelChoiceField(queryset=None, to_field_name="name", empty_label=None)
    version = forms.CharField(max_length=200, help_text=REFERENCE_HELP)

    def __init__(self, *args, targets, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = targets


class DeployForm(forms.Form):
    """Deploy a version to an existing endpoint, at a share of traffic."""

    version = forms.CharField(max_length=200, help_text=REFERENCE_HELP)
    weight = forms.IntegerField(min_value=0, max_value=100, initial=100)
    force = forms.BooleanField(
        required=False,
        label="Force: deploy even if its signature breaks this endpoint's clients (audited)",
    )


class ForceForm(forms.Form):
    """The force box offered beside a traffic, promote or rollback form the signature check
    refused (deployers); the refused form's other fields are posted again unchanged."""

    force = forms.BooleanField(
        required=False, label=FORCE_LABEL, widget=forms.CheckboxInput(attrs={"required": True})
    )


class PromoteForm(forms.Form):
    """The candidate takes 100 %."""

    force = forms.BooleanField(required=False, label=FORCE_LABEL)


class TrafficForm(forms.Form):
    """New weights for the versions of the current release (one row per version)."""

    force = forms.BooleanField(required=False, label=FORCE_LABEL)

    def __init__(self, *args, variants: list[dict], **kwargs):
        super().__init__(*args, **kwargs)
        self.variants = variants
        for index, variant in enumerate(variants):
            self.fields[f"version_{index}"] = forms.CharField(
                initial=variant["version"], widget=forms.HiddenInput
            )
            shadow = variant["role"] == VariantRole.SHADOW
            attributes = {
                "class": "traffic-weight",
                "data-role": variant["role"],
                "aria-label": f"Weight % of {variant['version']}",
            }
            self.fields[f"weight_{index}"] = forms.IntegerField(
                min_value=0, max_value=100, label=variant["version"],
                initial=variant.get("mirror_percent", 0) if shadow else variant["weight"],
                widget=forms.NumberInput(attrs=attributes),
            )  # fmt: skip
            self.fields[f"role_{index}"] = forms.ChoiceField(
                choices=VariantRole.choices,
                initial=variant["role"],
                widget=forms.Select(attrs={"aria-label": f"Role of {variant['version']}"}),
            )

    def rows(self):
        """(version field, weight field, role field) per version, for the template."""
        return [
            (self[f"version_{i}"], self[f"weight_{i}"], self[f"role_{i}"])
            for i in range(len(self.variants))
        ]

    def variants_input(self) -> list[dict]:
        """The cleaned rows as the service takes them."""
        return [
            {
                "version": self.cleaned_data[f"version_{i}"],
                "weight": self.cleaned_data[f"weight_{i}"],
                "role": self.cleaned_data[f"role_{i}"],
            }
            for i in range(len(self.variants))
        ]


class RollbackForm(forms.Form):
    """Roll back to one earlier release."""

    release = forms.IntegerField(min_value=1)
    force = forms.BooleanField(required=False, label=FORCE_LABEL)


class TargetCreateForm(forms.Form):
    """A new target (team admins)."""

    team = forms.ModelChoiceField(queryset=None, to_field_name="name", empty_label=None)
    name = forms.CharField(max_length=40)
    kind = forms.ChoiceField(choices=TargetKind.choices)
    environment = forms.ChoiceField(choices=Environment.choices)
    config = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="JSON object of kind-specific settings (secrets only by env var or file name).",
    )  # fmt: skip
    description = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

    def clean_config(self) -> dict:
        text = self.cleaned_data["config"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise forms.ValidationError("Not valid JSON.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Use a JSON object.")
        return value


class ScaleForm(forms.Form):
    """Run one version of the current release on N replicas (a scale-down is confirmed)."""

    version = forms.CharField(max_length=200, widget=forms.HiddenInput)
    replicas = forms.IntegerField(min_value=1, max_value=20)
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)


class TargetEditForm(forms.Form):
    """A target's environment, settings and description (its name and kind stay)."""

    environment = forms.ChoiceField(
        choices=Environment.choices,
        help_text="Fixed while endpoints use the target.",
    )
    config = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="JSON object of kind-specific settings (secrets only by env var or file name).",
    )  # fmt: skip
    description = forms.CharField(max_length=500, required=False)

    clean_config = TargetCreateForm.clean_config

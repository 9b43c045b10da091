"""Fleet page forms: enrollment codes and rollouts."""

from __future__ import annotations

from django import forms

from common.errors import ApplicationError


def _labels(text: str) -> dict[str, str]:
    """`key=value, key=value` → {key: value}."""
    labels = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise forms.ValidationError(f"{part!r} is not key=value.")
        labels[key.strip()] = value.strip()
    return labels


class EnrollmentCodeForm(forms.Form):
    """A one-time code, optionally with labels for the device that uses it."""

    labels = forms.CharField(
        required=False, max_length=1000, help_text="e.g. site=berlin, line=2 (optional)"
    )
    hours = forms.IntegerField(min_value=1, max_value=24 * 30, initial=24)

    def clean_labels(self) -> dict[str, str]:
        return _labels(self.cleaned_data["labels"])


class RolloutForm(forms.Form):
    """A staged rollout: waves as percentages (`10, 50, 100`) or cohorts (`site=a; site=b`)."""

    version = forms.CharField(max_length=200, help_text="model:N or model@alias")
    waves = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Percentages (10, 50, 100) or label cohorts separated by ; (site=a; site=b)",
    )
    wave_interval_seconds = forms.IntegerField(
        min_value=0, initial=0, label="Seconds between waves"
    )
    max_failure_percent = forms.IntegerField(min_value=0, max_value=100, initial=20)
    min_reported = forms.IntegerField(min_value=1, initial=1, label="Devices before judging")

    def clean_waves(self) -> list[dict]:
        text = self.cleaned_data["waves"].strip()
        if not text:
            return []
        if "=" in text:
            return [{"labels": _labels(part)} for part in text.split(";") if part.strip()]
        try:
            return [{"percent": int(part)} for part in text.split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError(
                "Waves are whole percentages separated by commas."
            ) from None

    def options(self) -> dict:
        data = dict(self.cleaned_data)
        return {"version": data.pop("version"), "waves": data.pop("waves"), **data}


def form_error(form: forms.Form) -> ApplicationError:
    """A form's errors as one readable domain error."""
    text = " ".join(str(error) for errors in form.errors.values() for error in errors)
    return ApplicationError(text or "Invalid input.")

"""Forms of the registry pages; the rules themselves live in the services."""

from django import forms

from accounts.models import Team
from common.errors import ApplicationError


def parse_tag_lines(text: str) -> dict[str, str]:
    """`key=value` per line (blank lines ignored) → a tags dict for `model_create`."""
    tags = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        key, separator, value = line.partition("=")
        if not separator:
            raise ApplicationError(f"Tags line {number}: write key=value.")
        tags[key.strip()] = value.strip()
    return tags


class ModelCreateForm(forms.Form):
    """A new model in one of the user's teams."""

    name = forms.CharField(
        max_length=200, strip=False, help_text="Lowercase letters, digits, '.', '_' or '-'."
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="name")
    description = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, max_length=10_000
    )
    tags = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=20_000,
        help_text="One key=value per line.",
    )

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        if len(teams) == 1:
            self.fields["team"].initial = teams[0]


class VersionUploadForm(forms.Form):
    """An ONNX file and what is known about it; sent by upload.js with a progress bar."""

    file = forms.FileField(
        allow_empty_file=True, widget=forms.ClearableFileInput(attrs={"accept": ".onnx"})
    )
    reference = forms.FileField(
        required=False,
        allow_empty_file=True,
        widget=forms.ClearableFileInput(attrs={"accept": ".csv"}),
        help_text="Optional CSV of sample inputs, for drift.",
    )
    source = forms.CharField(required=False, max_length=2_000, help_text="http(s) URL")
    git_commit = forms.CharField(required=False, max_length=64)
    data_reference = forms.CharField(required=False, max_length=2_000)
    metrics = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='JSON object, e.g. {"accuracy": 0.93}',
    )
    params = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='JSON object, e.g. {"max_depth": 4}',
    )


class AliasSetForm(forms.Form):
    """Point an alias at a version."""

    name = forms.CharField(max_length=32)
    version = forms.IntegerField(min_value=1)
    reason = forms.CharField(required=False, max_length=500)
    protected = forms.BooleanField(required=False)


class ApproveForm(forms.Form):
    decision = forms.ChoiceField(choices=[("approved", "Approve"), ("rejected", "Reject")])
    comment = forms.CharField(
        required=False, max_length=2_000, widget=forms.Textarea(attrs={"rows": 2})
    )


class BatchJobForm(forms.Form):
    """A ready version (or model@alias) and the file it should score."""

    version = forms.ChoiceField(help_text="A ready version, or an alias that names one.")
    file = forms.FileField(
        allow_empty_file=True,
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.parquet"}),
        help_text="CSV with a header row (Parquet too when pyarrow is installed).",
    )
    key_column = forms.CharField(
        required=False,
        max_length=200,
        help_text="Copied into the result next to the outputs. Default: a column named id, key "
        "or row_id, else the row number.",
    )

    def __init__(self, *args, versions=(), aliases=(), **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(alias.__str__(), f"{alias} → v{alias.version.number}") for alias in aliases]
        choices += [(version.reference, version.reference) for version in versions]
        self.fields["version"].choices = choices


class OptimizeForm(forms.Form):
    method = forms.ChoiceField(
        choices=[
            ("int8", "Graph optimizations + dynamic int8 quantization"),
            ("float16", "Graph optimizations + float16 weights"),
        ]
    )

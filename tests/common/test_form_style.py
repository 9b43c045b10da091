"""One form style: every form page renders its fields through includes/form_fields.html (label
above the field, errors and help under it), never Django's as_div/as_p/label_tag layouts."""

import re
from pathlib import Path

from django.conf import settings

TEMPLATES = Path(settings.BASE_DIR) / "templates"
RAW_LAYOUTS = re.compile(r"form\.as_(div|p|table|ul)\b|\.label_tag\b|{%\s*for field in form\s*%}")


def test_no_template_lays_out_form_fields_by_hand():
    by_hand = [
        f"{path.relative_to(TEMPLATES)}: {match.group(0)}"
        for path in TEMPLATES.rglob("*.html")
        if path.name != "form_fields.html"
        for match in RAW_LAYOUTS.finditer(path.read_text())
    ]
    # The endpoint page's one-line deploy form and the alert-rule row are inline forms by
    # design (a row of small fields next to the thing they act on).
    allowed = {
        "deployments/endpoint_detail.html: .label_tag",
        "monitoring/endpoint_alerts.html: {% for field in form %}",
    }
    assert [line for line in by_hand if line not in allowed] == []


def test_the_forms_named_in_the_issue_use_the_partial():
    for name in [
        "registry/model_list.html",
        "registry/upload.html",
        "registry/batch_new.html",
        "events/webhook_list.html",
        "accounts/tokens.html",
        "deployments/target_list.html",
        "deployments/endpoint_create.html",
    ]:
        assert '{% include "includes/form_fields.html"' in (TEMPLATES / name).read_text(), name

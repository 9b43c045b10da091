"""The compare page opens on the two newest versions, shows values as people read them and
keeps long values inside a fixed-layout table."""

import pytest

from registry.models import Alias, ModelVersion, RegisteredModel
from registry.templatetags.compare_format import compare_delta, compare_value

pytestmark = pytest.mark.django_db


@pytest.fixture
def model_with_versions(team):
    model = RegisteredModel.objects.create(name="iris", team=team)
    for number, accuracy in ((1, 0.9), (2, 0.913456789), (3, 0.9487654321)):
        ModelVersion.objects.create(
            model=model,
            number=number,
            status="ready",
            metrics={"accuracy": accuracy},
            params={"layers": [16, 8]} if number == 3 else {"layers": [8]},
        )
    Alias.objects.create(model=model, name="production", version=model.versions.get(number=2))
    return model


def test_without_a_choice_it_compares_the_two_newest_versions(
    client, scientist, model_with_versions
):
    client.force_login(scientist)
    page = client.get("/models/iris/compare/").content.decode()
    assert '<option value="2" selected>' in page.replace("\n", "")
    assert '<option value="3" selected>' in page.replace("\n", "")
    assert "<code>iris:2</code> (A) and <code>iris:3</code> (B)" in page
    assert "<td>0.9135</td><td>0.9488</td><td>+0.03531</td>" in page
    assert "<td>production</td><td>none</td>" in page
    assert "<td>8</td><td>16, 8</td>" in page
    assert "[&#x27;" not in page and "['" not in page
    assert 'class="table table-fixed" id="differences"' in page


def test_values_read_as_text_never_as_python():
    assert compare_value(["production", "champion"]) == "production, champion"
    assert compare_value([]) == "none"
    assert compare_value({"lr": 0.00012345, "epochs": 10}) == "lr: 0.0001234; epochs: 10"
    assert compare_value(0.123456789) == "0.1235"
    assert compare_value(1234.5678) == "1 235"
    assert compare_value(1.5e-7) == "1.500e-07"
    assert compare_value(None) == "—"
    assert compare_value(True) == "yes"
    assert compare_value(123456) == "123 456"
    assert compare_delta(-0.5) == "−0.5"
    assert compare_delta(None) == ""

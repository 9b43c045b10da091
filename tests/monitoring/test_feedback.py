"""Prediction log ingest (gateway token), feedback joined by request id, summaries, shadows."""

import threading
import time

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from monitoring import feedback, services
from monitoring.models import Feedback, PredictionRecord
from tests.monitoring.conftest import make_endpoint, make_version

pytestmark = pytest.mark.django_db


def record(request_id, version="iris:1", role="primary", **extra):
    return {
        "request_id": request_id,
        "version": version,
        "role": role,
        "time": time.time(),
        "status": 200,
        "latency": 0.01,
        **extra,
    }


def gateway_client(endpoint, token=None):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token or endpoint.gateway_token}")
    return client


def ingest(endpoint, records, token=None):
    return gateway_client(endpoint, token).post(
        f"/api/v1/endpoints/{endpoint.name}/predictions/", {"records": records}, format="json"
    )


def test_ingest_stores_records_with_their_version_and_ignores_resent_ones(endpoint, version):
    records = [record("a1", predicted_class="2", output=[2]), record("a2", predicted_value=1.5)]
    first = ingest(endpoint, records)
    assert first.status_code == 200, first.content
    assert first.json() == {"received": 2, "stored": 2, "input_sample_percent": 0.0}
    again = ingest(endpoint, records)
    assert again.json()["stored"] == 0
    rows = {r.request_id: r for r in PredictionRecord.objects.filter(endpoint=endpoint)}
    assert set(rows) == {"a1", "a2"}
    assert rows["a1"].version_id == version.pk
    assert rows["a1"].predicted_class == "2"
    assert rows["a2"].predicted_value == 1.5


def test_ingest_needs_the_endpoints_own_token(endpoint, other_endpoint):
    wrong = ingest(endpoint, [record("x")], token=other_endpoint.gateway_token)
    assert wrong.status_code == 401
    unknown = APIClient().post(
        "/api/v1/endpoints/nope/predictions/", {"records": []}, format="json",
        HTTP_AUTHORIZATION=f"Bearer {endpoint.gateway_token}",
    )  # fmt: skip
    assert unknown.status_code == 401
    assert not PredictionRecord.objects.exists()


def test_a_bad_record_stores_nothing_of_its_batch(endpoint):
    response = ingest(endpoint, [record("ok"), record("bad", status=999)])
    assert response.status_code == 400
    assert "record 1" in response.json()["error"]
    assert not PredictionRecord.objects.exists()


def post_feedback(client, endpoint, items):
    return client.post(f"/api/v1/endpoints/{endpoint.name}/feedback/", items, format="json")


def test_feedback_is_joined_to_the_serving_version_and_unknown_ids_are_reported(
    endpoint, version, candidate, scientist_api
):
    ingest(
        endpoint,
        [
            record("r1", predicted_class="cat"),
            record("r2", version="iris:2", role="candidate", predicted_class="dog"),
            # A shadow's answer to r1 must not be what r1's feedback is judged against.
            record("r1", version="iris:2", role="shadow", predicted_class="dog"),
            record("r3", predicted_value=2.0),
        ],
    )
    response = post_feedback(
        scientist_api,
        endpoint,
        [
            {"request_id": "r1", "label": "cat"},
            {"request_id": "r2", "label": "cat"},
            {"request_id": "r3", "label": 2.5},
            {"request_id": "missing", "label": "cat"},
        ],
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 3, "duplicates": [], "unknown": ["missing"]}
    stored = {f.request_id: f for f in Feedback.objects.all()}
    assert (stored["r1"].version_id, stored["r1"].correct) == (version.pk, True)
    assert (stored["r2"].version_id, stored["r2"].correct) == (candidate.pk, False)
    assert stored["r3"].error == pytest.approx(0.5)
    again = post_feedback(scientist_api, endpoint, [{"request_id": "r1", "label": "dog"}])
    assert again.json() == {"accepted": 0, "duplicates": ["r1"], "unknown": []}
    assert Feedback.objects.get(request_id="r1").label == "cat"
    summary = {row["version"]: row for row in feedback.feedback_summary(endpoint=endpoint)}
    assert summary["iris:1"]["accuracy"] == 1.0
    assert summary["iris:1"]["mean_absolute_error"] == pytest.approx(0.5)
    assert summary["iris:2"]["accuracy"] == 0.0
    assert AuditEvent.objects.filter(action="feedback.record").count() == 2


@pytest.mark.parametrize(
    "items",
    [
        {"request_id": "r1", "label": "x"},
        [],
        [{"request_id": "r1"}],
        [{"request_id": "r1", "label": "x", "value": 1}],
        [{"request_id": "r1", "value": "high"}],
        [{"request_id": "bad id!", "label": "x"}],
        [{"request_id": "r1", "label": "x"}, {"request_id": "r1", "label": "y"}],
        [{"request_id": "r1", "label": "x" * 101}],
        [{"request_id": "r1", "label": "x", "extra": 1}],
        [{"request_id": f"r{i}", "label": "x"} for i in range(1001)],
    ],
)
def test_bad_feedback_gets_400_and_stores_nothing(endpoint, scientist_api, items):
    ingest(endpoint, [record("r1", predicted_class="x")])
    response = post_feedback(scientist_api, endpoint, items)
    assert response.status_code == 400
    assert response.json()["error"]
    assert not Feedback.objects.exists()


def test_feedback_access_follows_roles_and_teams(endpoint, viewer_api, outsider_api):
    ingest(endpoint, [record("r1", predicted_class="x")])
    assert (
        post_feedback(viewer_api, endpoint, [{"request_id": "r1", "label": "x"}]).status_code == 403
    )
    assert (
        post_feedback(outsider_api, endpoint, [{"request_id": "r1", "label": "x"}]).status_code
        == 404
    )
    assert viewer_api.get(f"/api/v1/endpoints/{endpoint.name}/feedback/").status_code == 200
    assert not Feedback.objects.exists()


def test_shadow_comparison_reports_agreement_and_difference(team):
    primary, shadow = make_version(team, "iris", 1), make_version(team, "iris", 2)
    endpoint = make_endpoint(team, "shadowed", [(primary, 100, "primary"), (shadow, 50, "shadow")])
    records = []
    for i in range(10):
        records.append(record(f"c{i}", predicted_class="1"))
        records.append(
            record(f"c{i}", version="iris:2", role="shadow", predicted_class="1" if i < 7 else "0")
        )
    ingest(endpoint, records)
    (comparison,) = feedback.shadow_comparison(endpoint=endpoint)
    assert comparison["version"] == "iris:2"
    assert comparison["pairs"] == 10
    assert comparison["agreement_rate"] == pytest.approx(0.7)
    assert comparison["trend"][-1]["pairs"] == 10

    regression = make_endpoint(team, "regress", [(primary, 100, "primary"), (shadow, 50, "shadow")])
    ingest(
        regression,
        [
            record("v1", predicted_value=1.0),
            record("v1", version="iris:2", role="shadow", predicted_value=1.5),
            record("v2", predicted_value=2.0),
            record("v2", version="iris:2", role="shadow", predicted_value=1.0),
        ],
    )
    (comparison,) = feedback.shadow_comparison(endpoint=regression)
    assert comparison["kind"] == "regressor"
    assert comparison["mean_absolute_difference"] == pytest.approx(0.75)


def test_prune_deletes_only_old_records(endpoint, settings):
    from datetime import timedelta

    from django.utils import timezone

    ingest(endpoint, [record("old"), record("new")])
    PredictionRecord.objects.filter(request_id="old").update(
        received_at=timezone.now() - timedelta(days=31)
    )
    settings.PREDICTION_LOG_RETENTION_DAYS = 30
    assert services.prediction_records_prune()["records"] == 1
    assert list(PredictionRecord.objects.values_list("request_id", flat=True)) == ["new"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_feedback_batches_store_each_request_exactly_once(team, scientist, make_actor):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL")
    primary = make_version(team, "iris", 1)
    endpoint = make_endpoint(team, "racy", [(primary, 100, "primary")])
    ingest(endpoint, [record(f"q{i}", predicted_class="1") for i in range(200)])
    actor = make_actor(scientist)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def send(offset):
        try:
            barrier.wait()
            items = [{"request_id": f"q{i}", "label": "1"} for i in range(offset, offset + 120)]
            results.append(services.feedback_record(actor=actor, endpoint=endpoint, items=items))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(offset,)) for offset in (0, 40, 80, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Feedback.objects.filter(endpoint=endpoint).count() == 200
    assert sum(r["accepted"] for r in results) == 200
    assert sum(len(r["duplicates"]) for r in results) == 4 * 120 - 200


def test_the_endpoint_page_shows_live_accuracy_per_version(
    endpoint, version, candidate, scientist_api, viewer, client
):
    ingest(
        endpoint,
        [
            record("a1", predicted_class="cat"),
            record("a2", predicted_class="cat"),
            record("b1", version="iris:2", role="candidate", predicted_class="dog"),
        ],
    )
    post_feedback(
        scientist_api,
        endpoint,
        [
            {"request_id": "a1", "label": "cat"},
            {"request_id": "a2", "label": "dog"},
            {"request_id": "b1", "label": "dog"},
        ],
    )
    client.force_login(viewer)
    page = client.get(f"/endpoints/{endpoint.name}/").content.decode()
    section = page[page.index("Live quality from feedback") :]
    rows = section[: section.index("</table>")]
    assert "<td>iris:1</td><td>2</td><td>50.0" in rows
    assert "<td>iris:2</td><td>1</td><td>100.0" in rows

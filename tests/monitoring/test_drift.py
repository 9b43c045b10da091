"""Drift statistics against independent numpy/scipy computations, verdicts, and stored reports."""

import numpy as np
import pytest
from django.utils import timezone
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from events.models import Webhook, WebhookDelivery
from monitoring import drift, services
from monitoring.models import Component, DriftReport
from tests.monitoring.conftest import make_endpoint, make_version, seed_point

THRESHOLDS = drift.Thresholds()


def le_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts in Prometheus `le` buckets, as the runtime keeps them (len(edges) + 1)."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)


def numeric_feature(name: str, edges, counts) -> dict:
    return {
        "name": name,
        "input": "X",
        "index": 0,
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
    }


def live_histogram(edges, values) -> dict:
    return {"bounds": [float(e) for e in edges], "counts": le_counts(edges, values).tolist()}


@pytest.fixture
def samples():
    generator = np.random.default_rng(20240611)
    reference = generator.normal(10.0, 2.0, 50_000)
    edges = np.quantile(reference, np.linspace(0, 1, 11))
    return generator, reference, edges


def test_numeric_statistics_equal_numpy_and_scipy_on_the_same_samples(samples):
    generator, reference, edges = samples
    live = generator.normal(11.5, 2.4, 20_000)
    feature = numeric_feature("amount", edges, le_counts(edges, reference))
    result = drift.numeric_statistics(feature, live_histogram(edges, live), THRESHOLDS)

    expected_p = le_counts(edges, reference) / reference.size
    actual_q = le_counts(edges, live) / live.size
    p, q = np.where(expected_p == 0, 1e-4, expected_p), np.where(actual_q == 0, 1e-4, actual_q)
    assert result["psi"] == pytest.approx(np.sum((q - p) * np.log(q / p)), abs=1e-6)

    # Wasserstein on bin representatives: tails sit half a neighbouring bin beyond the edges.
    widths = np.diff(edges)
    points = np.concatenate(
        [[edges[0] - widths[0] / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1] + widths[-1] / 2]]
    )
    raw = wasserstein_distance(points, points, le_counts(edges, reference), le_counts(edges, live))
    assert result["wasserstein"] * result["wasserstein_scale"] == pytest.approx(raw, rel=1e-4)
    # The scale is the reference's IQR, read from its histogram.
    boundaries = np.concatenate([[edges[0] - widths[0]], edges, [edges[-1] + widths[-1]]])
    cdf = np.concatenate([[0.0], np.cumsum(expected_p)])
    q25, q75 = np.interp([0.25, 0.75], cdf, boundaries)
    assert result["wasserstein_scale"] == pytest.approx(q75 - q25)
    assert result["wasserstein_scale"] == pytest.approx(
        np.subtract(*np.percentile(reference, [75, 25])), rel=0.02
    )
    assert result["drifting"] is True
    assert result["live_count"] == 20_000


def test_categorical_statistics_equal_scipy_jensen_shannon():
    reference = {"card": 600, "cash": 300, "wire": 100}
    live = {"card": 200, "cash": 500, "wire": 250, "__other__": 50}
    feature = {"name": "method", "kind": "categorical", "categories": reference}
    result = drift.categorical_statistics(feature, {"categories": live}, THRESHOLDS)
    names = ["card", "cash", "wire", "__other__"]
    p = np.array([reference.get(n, 0) for n in names], dtype=float)
    q = np.array([live.get(n, 0) for n in names], dtype=float)
    assert result["js_distance"] == pytest.approx(jensenshannon(p, q, base=2), abs=1e-6)
    assert result["bins"] == names
    assert result["drifting"] is True


def test_a_shifted_distribution_is_flagged_and_an_unshifted_one_of_100_000_rows_is_not(samples):
    generator, reference, edges = samples
    features = {"features": [numeric_feature("amount", edges, le_counts(edges, reference))]}
    same = generator.normal(10.0, 2.0, 100_000)
    shifted = generator.normal(11.5, 2.0, 100_000)

    calm = drift.compare(features, {"amount": live_histogram(edges, same)}, None, THRESHOLDS)
    assert calm["verdict"] == "no_drift"
    assert calm["features"][0]["psi"] < 0.01
    assert calm["features"][0]["drifting"] is False

    moved = drift.compare(features, {"amount": live_histogram(edges, shifted)}, None, THRESHOLDS)
    assert moved["verdict"] == "drift"
    assert moved["features"][0]["psi"] > 0.2


def test_registry_profiles_fold_the_live_tails_into_the_end_bins(samples):
    generator, reference, edges = samples
    # The registry's layout: one count per bin between edges, out-of-range values in the end
    # bins, bins closed on the right like the runtime's.
    bins = edges.size - 1
    registry_counts = np.bincount(
        np.clip(np.searchsorted(edges, reference, side="left") - 1, 0, bins - 1), minlength=bins
    )
    feature = numeric_feature("amount", edges, registry_counts)
    live = generator.normal(10.0, 2.0, 100_000)
    result = drift.numeric_statistics(feature, live_histogram(edges, live), THRESHOLDS)
    assert len(result["reference"]) == len(result["live"]) == bins
    assert result["live_count"] == 100_000
    assert result["psi"] < 0.01 and result["drifting"] is False


def test_an_integer_feature_with_edges_on_its_values_does_not_drift_against_itself():
    values = np.repeat([0.0, 1.0, 2.0, 3.0], 2500)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    feature = numeric_feature("children", edges, le_counts(edges, values))
    result = drift.numeric_statistics(feature, live_histogram(edges, values), THRESHOLDS)
    assert result["psi"] == pytest.approx(0.0)


def test_the_dataset_verdict_follows_the_share_of_drifting_features(samples):
    generator, reference, edges = samples
    profile = {
        "features": [numeric_feature(f"f{i}", edges, le_counts(edges, reference)) for i in range(4)]
    }
    same = live_histogram(edges, generator.normal(10.0, 2.0, 5_000))
    moved = live_histogram(edges, generator.normal(13.0, 2.0, 5_000))
    one_of_four = drift.compare(
        profile, {"f0": moved, "f1": same, "f2": same, "f3": same}, None, THRESHOLDS
    )
    assert (one_of_four["drifting_share"], one_of_four["verdict"]) == (0.25, "no_drift")
    two_of_four = drift.compare(
        profile, {"f0": moved, "f1": moved, "f2": same, "f3": same}, None, THRESHOLDS
    )
    assert (two_of_four["drifting_share"], two_of_four["verdict"]) == (0.5, "drift")
    nothing = drift.compare(profile, {}, None, THRESHOLDS)
    assert nothing["verdict"] == "insufficient_data"


@pytest.mark.django_db
def test_reports_are_computed_from_the_servers_rollups_and_kept(team, samples, settings):
    generator, reference, edges = samples
    profile = {
        "rows": 50_000,
        "features": [numeric_feature("amount", edges, le_counts(edges, reference))],
        "prediction": {"kind": "categorical", "categories": {"0": 500, "1": 500}},
    }
    version = make_version(team, "scorer", 1, profile=profile)
    endpoint = make_endpoint(team, "scoring", [(version, 100, "primary")])
    webhook = Webhook.objects.create(
        team=team, name="hook", url="https://hooks.example.com/x", events=["drift.detected"]
    )
    now = timezone.now()
    for minutes_ago in range(3):
        shifted = generator.normal(12.0, 2.0, 1_000)
        seed_point(
            endpoint,
            version,
            now.replace(second=0, microsecond=0) - timezone.timedelta(minutes=minutes_ago),
            requests=1_000,
            component=Component.SERVER,
            features={"amount": live_histogram(edges, shifted)},
            prediction={"categories": {"0": 900, "1": 100}},
        )
    # Gateway rows never count as feature data.
    seed_point(endpoint, version, now.replace(second=0, microsecond=0), requests=5)

    assert services.drift_compute_all(now=now) == 1
    report = DriftReport.objects.get()
    assert report.verdict == "drift"
    assert report.rows == 3_000
    assert report.features[0]["drifting"] is True
    assert report.prediction["js_distance"] > 0.1
    assert report.scores["amount"] == pytest.approx(report.features[0]["psi"] / 0.2, rel=1e-3)
    assert WebhookDelivery.objects.filter(webhook=webhook, event="drift.detected").count() == 1

    # Every run keeps its report; the webhook fires on the change to drift, not every time.
    services.drift_compute_all(now=now)
    assert DriftReport.objects.count() == 2
    assert WebhookDelivery.objects.filter(webhook=webhook).count() == 1


@pytest.mark.django_db
def test_versions_without_a_profile_get_no_report(endpoint):
    assert services.drift_compute_all() == 0
    assert not DriftReport.objects.exists()

"""Counter deltas from hand-written Prometheus text: resets lose nothing and count nothing twice."""

import pytest

from monitoring import exposition


def server_text(
    *,
    success: int,
    client_error: int = 0,
    server_error: int = 0,
    buckets=(0, 0, 0),
    feature=(0, 0, 0),
    start: float = 1000.0,
    latency_sum: float = 0.0,
) -> str:
    """An exposition like the runtime's version server writes, with 2 latency bounds."""
    total = sum(buckets)
    labels = 'component="server",endpoint="fraud",variant="primary",version="iris:1"'
    cumulative = [buckets[0], buckets[0] + buckets[1], total]
    feature_cumulative = [feature[0], feature[0] + feature[1], sum(feature)]
    return f"""# HELP modeldeck_requests_total Inference requests by outcome.
# TYPE modeldeck_requests_total counter
modeldeck_requests_total{{{labels},outcome="success"}} {success}.0
modeldeck_requests_total{{{labels},outcome="client_error"}} {client_error}.0
modeldeck_requests_total{{{labels},outcome="server_error"}} {server_error}.0
# HELP modeldeck_in_flight_requests Inference requests being served.
# TYPE modeldeck_in_flight_requests gauge
modeldeck_in_flight_requests{{{labels}}} 3.0
# HELP modeldeck_request_duration_seconds Time from request to response.
# TYPE modeldeck_request_duration_seconds histogram
modeldeck_request_duration_seconds_bucket{{{labels},le="0.01"}} {cumulative[0]}.0
modeldeck_request_duration_seconds_bucket{{{labels},le="0.1"}} {cumulative[1]}.0
modeldeck_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cumulative[2]}.0
modeldeck_request_duration_seconds_count{{{labels}}} {total}.0
modeldeck_request_duration_seconds_sum{{{labels}}} {latency_sum}
# HELP modeldeck_feature_value Input feature values.
# TYPE modeldeck_feature_value histogram
modeldeck_feature_value_bucket{{{labels},feature="amount",le="0.0"}} {feature_cumulative[0]}.0
modeldeck_feature_value_bucket{{{labels},feature="amount",le="10.0"}} {feature_cumulative[1]}.0
modeldeck_feature_value_bucket{{{labels},feature="amount",le="+Inf"}} {feature_cumulative[2]}.0
modeldeck_feature_value_count{{{labels},feature="amount"}} {sum(feature)}.0
modeldeck_feature_value_sum{{{labels},feature="amount"}} -5.0
# HELP modeldeck_predictions_total Predicted classes.
# TYPE modeldeck_predictions_total counter
modeldeck_predictions_total{{{labels},class="fraud"}} {success}.0
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
"""


def scrape(previous: dict, text: str, previous_start: float | None = None):
    parsed = exposition.parse(text)
    restarted = exposition.restarted(previous_start, parsed.process_start)
    growth = exposition.deltas(previous, parsed, process_restarted=restarted)
    parts = exposition.contributions(parsed, growth, lambda labels: 7)
    return parsed, parts.get(7)


def test_first_scrape_counts_everything_since_the_process_started():
    parsed, part = scrape({}, server_text(success=5, client_error=1, buckets=(3, 2, 1)))
    assert (part.requests, part.successes, part.client_errors, part.server_errors) == (6, 5, 1, 0)
    assert part.latency == {"bounds": [0.01, 0.1], "counts": [3, 2, 1]}
    assert part.prediction == {"categories": {"fraud": 5}}
    assert parsed.process_start == 1000.0
    # Gauges are not counters: in-flight requests never become deltas.
    assert not any("in_flight" in key for key in parsed.values)


def test_second_scrape_counts_only_the_growth():
    first, _ = scrape({}, server_text(success=5, buckets=(3, 2, 0), feature=(1, 1, 0)))
    _, part = scrape(
        first.values,
        server_text(success=9, server_error=2, buckets=(4, 5, 2), feature=(1, 4, 2)),
        previous_start=1000.0,
    )
    assert (part.requests, part.successes, part.server_errors) == (6, 4, 2)
    assert part.latency == {"bounds": [0.01, 0.1], "counts": [1, 3, 2]}
    assert part.features == {"amount": {"bounds": [0.0, 10.0], "counts": [0, 3, 2]}}


def test_nothing_new_gives_no_contribution():
    first, _ = scrape({}, server_text(success=5, buckets=(5, 0, 0)))
    _, part = scrape(first.values, server_text(success=5, buckets=(5, 0, 0)), 1000.0)
    assert part is None


def test_a_counter_that_went_down_restarted_and_its_new_value_is_the_delta():
    first, _ = scrape({}, server_text(success=50, buckets=(50, 0, 0)))
    # Same start time reported (e.g. no process collector), but counters fell: a reset.
    _, part = scrape(first.values, server_text(success=3, buckets=(1, 2, 0)), 1000.0)
    assert (part.requests, part.successes) == (3, 3)
    assert part.latency["counts"] == [1, 2, 0]


def test_a_restart_is_recognised_by_start_time_even_when_new_counts_exceed_old_ones():
    first, _ = scrape({}, server_text(success=5, buckets=(5, 0, 0), start=1000.0))
    # The new process already served 8 requests: 8 > 5 would look like growth of 3.
    _, part = scrape(first.values, server_text(success=8, buckets=(6, 2, 0), start=2000.0), 1000.0)
    assert part.requests == 8
    assert part.latency["counts"] == [6, 2, 0]


def test_a_histogram_resets_as_a_whole_when_one_bucket_went_down():
    first, _ = scrape({}, server_text(success=10, buckets=(10, 0, 0)))
    # Total grew (10 → 12) but the first bucket fell (10 → 2): the histogram restarted.
    _, part = scrape(first.values, server_text(success=12, buckets=(2, 6, 4)), 1000.0)
    assert part.latency["counts"] == [2, 6, 4]


def test_a_falling_histogram_sum_alone_is_not_a_reset():
    first, _ = scrape({}, server_text(success=1, buckets=(1, 0, 0), latency_sum=5.0))
    _, part = scrape(
        first.values, server_text(success=2, buckets=(2, 0, 0), latency_sum=4.5), 1000.0
    )
    assert part.latency["counts"] == [1, 0, 0]
    assert part.latency_sum == pytest.approx(-0.5)


def test_series_of_unknown_versions_are_skipped():
    parsed = exposition.parse(server_text(success=4))
    growth = exposition.deltas({}, parsed)
    assert exposition.contributions(parsed, growth, lambda labels: None) == {}


def test_gateway_series_are_split_by_version_label_and_shadow_comparisons_counted():
    text = """# TYPE modeldeck_requests_total counter
modeldeck_requests_total{component="gateway",endpoint="e",outcome="success",variant="primary",version="m:1"} 7.0
modeldeck_requests_total{component="gateway",endpoint="e",outcome="success",variant="candidate",version="m:2"} 3.0
modeldeck_requests_total{component="gateway",endpoint="e",outcome="server_error",variant="shadow",version="m:3"} 1.0
# TYPE modeldeck_shadow_comparisons_total counter
modeldeck_shadow_comparisons_total{agreed="true",component="gateway",endpoint="e",primary_version="m:1",variant="shadow",version="m:3"} 4.0
modeldeck_shadow_comparisons_total{agreed="false",component="gateway",endpoint="e",primary_version="m:1",variant="shadow",version="m:3"} 1.0
"""  # noqa: E501
    parsed = exposition.parse(text)
    ids = {"m:1": 1, "m:2": 2, "m:3": 3}
    parts = exposition.contributions(
        parsed, exposition.deltas({}, parsed), lambda labels: ids[labels["version"]]
    )
    assert {pk: part.requests for pk, part in parts.items()} == {1: 7, 2: 3, 3: 1}
    assert (parts[2].variant, parts[3].variant) == ("candidate", "shadow")
    assert (parts[3].shadow_agreed, parts[3].shadow_disagreed, parts[3].server_errors) == (4, 1, 1)


def test_unreadable_text_is_an_exposition_error():
    with pytest.raises(exposition.ExpositionError):
        exposition.parse('modeldeck_requests_total{outcome="success" 1\n')

"""Route tables in-process: validation, weighted split and sticky assignment."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from modeldeck_runtime.gateway import compare_answers
from modeldeck_runtime.routing import TableError, parse_table, sticky_point

DRAWS = 10_000
Z_99 = 2.5758


def table(*weights: tuple[str, float], sticky=None, shadows=()):
    """A parsed table with upstreams on made-up local ports."""
    routes = [
        {"version": version, "upstream": f"http://127.0.0.1:{9000 + i}", "weight": weight}
        for i, (version, weight) in enumerate(weights)
    ]
    routes += [
        {
            "version": version,
            "upstream": "http://127.0.0.1:9999",
            "role": "shadow",
            "mirror_percent": percent,
        }
        for version, percent in shadows
    ]
    return parse_table({"generation": 1, "sticky": sticky, "routes": routes})


def within_binomial_interval(count: int, draws: int, probability: float) -> bool:
    """Whether count lies in the 99 % normal-approximation interval of Binomial(draws, p)."""
    spread = Z_99 * math.sqrt(draws * probability * (1 - probability))
    return abs(count - draws * probability) <= spread


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (70, 20, 10), (1, 99)])
def test_random_split_over_ten_thousand_requests_follows_the_weights(weights):
    routes = table(*((str(i + 1), weight) for i, weight in enumerate(weights)))
    generator = random.Random(20240611)
    counts = {str(i + 1): 0 for i in range(len(weights))}
    for _ in range(DRAWS):
        counts[routes.choose(generator.random()).version] += 1
    for i, weight in enumerate(weights):
        assert within_binomial_interval(counts[str(i + 1)], DRAWS, weight / 100), counts


def test_sticky_keys_split_by_weight():
    routes = table(("1", 70), ("2", 30), sticky={"header": "X-User-Id"})
    chosen = [routes.choose(sticky_point(f"user-{i}", "shop")).version for i in range(DRAWS)]
    assert within_binomial_interval(chosen.count("2"), DRAWS, 0.30)


def test_sticky_key_always_lands_on_the_same_version():
    routes = table(("1", 50), ("2", 50))
    for i in range(200):
        key = f"user-{i}"
        assert routes.choose(sticky_point(key, "shop")) == routes.choose(sticky_point(key, "shop"))


def test_moving_ten_percent_of_weight_moves_about_ten_percent_of_keys():
    before = table(("1", 90), ("2", 10))
    after = table(("1", 80), ("2", 20))
    points = [sticky_point(f"user-{i}", "shop") for i in range(DRAWS)]
    stayed = sum(before.choose(point).version == after.choose(point).version for point in points)
    assert stayed / DRAWS >= 0.85
    moved_to_candidate = sum(
        before.choose(point).version == "1" and after.choose(point).version == "2"
        for point in points
    )
    assert within_binomial_interval(moved_to_candidate, DRAWS, 0.10)


def test_route_order_does_not_change_assignment():
    forward = table(("1", 60), ("2", 40))
    backward = parse_table({**forward.document(), "routes": forward.document()["routes"][::-1]})
    for i in range(500):
        point = sticky_point(f"user-{i}", "shop")
        assert forward.choose(point).version == backward.choose(point).version


def test_shadows_take_no_weighted_traffic():
    routes = table(("1", 100), shadows=[("2", 50)])
    assert {routes.choose(i / 100).version for i in range(100)} == {"1"}
    assert [shadow.version for shadow in routes.shadows] == ["2"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "generation": 1,
                "routes": [
                    {"version": "1", "upstream": "http://127.0.0.1:1", "weight": 90},
                    {"version": "2", "upstream": "http://127.0.0.1:2", "weight": 20},
                ],
            },
            "weights of the primary and candidate routes sum to 110, not 100",
        ),
        ({"generation": -1, "routes": []}, "'generation' must be a non-negative integer"),
        (
            {"generation": 1, "routes": [{"version": "1", "upstream": "ftp://x", "weight": 100}]},
            "upstream of version '1' must look like http://host:port, not 'ftp://x'",
        ),
        (
            {
                "generation": 1,
                "routes": [
                    {"version": "1", "upstream": "http://127.0.0.1:1", "weight": 100},
                    {"version": "1", "upstream": "http://127.0.0.1:2", "role": "shadow"},
                ],
            },
            "version '1' is routed more than once",
        ),
        (
            {
                "generation": 1,
                "routes": [
                    {"version": "1", "upstream": "http://127.0.0.1:1", "weight": 100, "role": "x"}
                ],
            },
            "role of version '1' must be one of primary, candidate, shadow",
        ),
        (
            {"generation": 1, "sticky": {"query": "u"}, "routes": []},
            '\'sticky\' must be null, {"header": NAME} or {"cookie": NAME}',
        ),
    ],
)
def test_invalid_tables_are_refused(document, message):
    with pytest.raises(TableError) as caught:
        parse_table(document)
    assert str(caught.value) == message


def test_classifier_agreement_compares_labels():
    primary = {"label": np.array([0, 1, 2])}
    assert compare_answers(primary, {"label": np.array([0, 1, 2])}) == (True, None)
    assert compare_answers(primary, {"label": np.array([0, 1, 1])}) == (False, None)
    assert compare_answers(primary, {"label": np.array([0, 1])}) == (False, None)


def test_score_agreement_compares_argmax():
    primary = {"scores": np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)}
    agreed, difference = compare_answers(
        primary, {"scores": np.array([[0.6, 0.4], [0.3, 0.7]], dtype=np.float32)}
    )
    assert agreed is True
    assert difference == pytest.approx(0.3)


def test_regressor_agreement_is_relative():
    primary = {"value": np.array([[1000.0], [2.0]])}
    assert compare_answers(primary, {"value": np.array([[1000.0005], [2.0]])})[0] is True
    assert compare_answers(primary, {"value": np.array([[1000.01], [2.0]])})[0] is False

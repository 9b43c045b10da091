"""Quantiles from bucket counts, and adding histograms up."""

import math

import numpy as np
import pytest

from monitoring import histograms


def test_quantile_interpolates_linearly_inside_the_bucket():
    # 10 values <= 0.1, 10 in (0.1, 0.2]: the median is the top of the first bucket,
    # p75 is half-way through the second.
    histogram = {"bounds": [0.1, 0.2, 0.4], "counts": [10, 10, 0, 0]}
    assert histograms.quantile(histogram, 0.5) == pytest.approx(0.1)
    assert histograms.quantile(histogram, 0.75) == pytest.approx(0.15)
    # The first bucket starts at zero.
    assert histograms.quantile(histogram, 0.25) == pytest.approx(0.05)


def test_quantile_in_the_inf_bucket_is_the_last_finite_bound():
    histogram = {"bounds": [0.1, 0.2], "counts": [1, 0, 9]}
    assert histograms.quantile(histogram, 0.95) == pytest.approx(0.2)


def test_empty_histograms_have_no_quantile():
    assert histograms.quantile({"bounds": [1.0], "counts": [0, 0]}, 0.5) is None
    assert histograms.quantile({}, 0.5) is None
    many = histograms.quantiles([1.0], np.array([[0, 0], [2, 0]]), [0.5])
    assert math.isnan(many[0, 0]) and many[1, 0] == pytest.approx(0.5)


def test_merge_adds_counts_and_categories():
    a = {"bounds": [1.0, 2.0], "counts": [1, 2, 3]}
    assert histograms.merge(a, a) == {"bounds": [1.0, 2.0], "counts": [2, 4, 6]}
    assert histograms.merge({"categories": {"x": 1}}, {"categories": {"x": 2, "y": 1}}) == {
        "categories": {"x": 3, "y": 1}
    }
    assert histograms.merge({}, a) == a


def test_merge_moves_buckets_with_other_bounds_by_their_upper_bound():
    existing = {"bounds": [1.0, 2.0], "counts": [0, 0, 0]}
    other = {"bounds": [0.5, 1.5, 3.0], "counts": [1, 2, 3, 4]}
    # <=0.5 -> <=1; (0.5,1.5] -> (1,2]; (1.5,3] -> +Inf; +Inf -> +Inf
    assert histograms.merge(existing, other)["counts"] == [1, 2, 7]


def test_from_cumulative_orders_buckets_and_ends_with_inf():
    pairs = [(float("inf"), 6.0), (0.1, 2.0), (0.5, 5.0)]
    assert histograms.from_cumulative(pairs) == {"bounds": [0.1, 0.5], "counts": [2, 3, 1]}

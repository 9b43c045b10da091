"""The sequential test against textbook values and by simulation, peeking after every batch."""

import math

import numpy as np
import pytest
from scipy import stats

from monitoring import sequential
from monitoring.sequential import ArmSummary, evaluate, planned_sample_size

ALPHA = 0.05


def test_planned_sample_size_matches_the_textbook_value():
    # Cohen's d = 0.5, two-sided α = 0.05, power 0.8: 63 per group (62.79 rounded up).
    assert planned_sample_size(variance=1.0, minimum_effect=0.5, alpha=0.05, power=0.8) == 63
    # Proportions 0.5 → 0.55 (δ = 0.05, σ² = 0.25): (1.95996 + 0.84162)² · 0.5 / 0.0025 = 1569.8
    assert planned_sample_size(variance=0.25, minimum_effect=0.05, alpha=0.05, power=0.8) == 1570


def test_log_likelihood_ratio_matches_a_hand_computed_value():
    # v = 0.01, τ = 0.1, Δ = 0.3: ½·ln(0.01/0.02) + 0.01·0.09 / (2·0.01·0.02) = 1.903426
    value = sequential.log_likelihood_ratio(0.3, 0.01, 0.1)
    assert value == pytest.approx(0.5 * math.log(0.5) + 2.25, abs=1e-12)
    assert value == pytest.approx(1.9034264, abs=1e-6)


def test_interval_is_exactly_where_the_likelihood_ratio_crosses_one_over_alpha():
    variance, tau = 0.0004, 0.05
    width = float(sequential.half_width(variance, tau, ALPHA))
    at_edge = sequential.log_likelihood_ratio(0.1, variance, tau, theta0=0.1 - width)
    assert float(at_edge) == pytest.approx(math.log(1 / ALPHA), abs=1e-9)


def test_arm_summary_from_sums_equals_from_values():
    values = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1], dtype=float)
    direct = ArmSummary.from_values(values)
    summed = ArmSummary.from_sums(count=10, total=values.sum(), total_of_squares=(values**2).sum())
    assert summed.count == direct.count == 10
    assert summed.mean == pytest.approx(direct.mean)
    assert summed.variance == pytest.approx(direct.variance)


def test_no_verdict_before_the_minimum_sample():
    control = ArmSummary(count=50, mean=0.1, variance=0.09)
    treatment = ArmSummary(count=50, mean=0.9, variance=0.09)
    result = evaluate(control, treatment, alpha=ALPHA, minimum_effect=0.05, minimum_samples=100)
    assert result.verdict == sequential.INCONCLUSIVE
    assert (result.lower, result.upper) == (-math.inf, math.inf)


def test_clear_difference_gives_a_verdict_in_the_right_direction():
    control = ArmSummary(count=5000, mean=0.30, variance=0.21)
    treatment = ArmSummary(count=5000, mean=0.36, variance=0.2304)
    better = evaluate(control, treatment, alpha=ALPHA, minimum_effect=0.03)
    assert better.verdict == sequential.BETTER
    assert better.lower > 0
    # For latency-like metrics lower is better: the same numbers mean "worse".
    worse = evaluate(control, treatment, alpha=ALPHA, minimum_effect=0.03, higher_is_better=False)
    assert worse.verdict == sequential.WORSE


def _simulate(rate_control, rate_treatment, *, runs, batches, batch_size, seed):
    """Bernoulli experiments peeked at after every batch; returns per-look arrays."""
    generator = np.random.default_rng(seed)
    control = generator.binomial(batch_size, rate_control, size=(runs, batches)).cumsum(axis=1)
    treatment = generator.binomial(batch_size, rate_treatment, size=(runs, batches)).cumsum(axis=1)
    counts = batch_size * np.arange(1, batches + 1)
    mean_control, mean_treatment = control / counts, treatment / counts
    variance = sequential.difference_variance(
        counts,
        mean_control * (1 - mean_control) * counts / (counts - 1),
        counts,
        mean_treatment * (1 - mean_treatment) * counts / (counts - 1),
    )
    return mean_treatment - mean_control, variance, counts


def _running_intervals(difference, variance, tau):
    width = sequential.half_width(variance, tau, ALPHA)
    lower = np.maximum.accumulate(difference - width, axis=1)
    upper = np.minimum.accumulate(difference + width, axis=1)
    return lower, upper


def test_aa_false_winner_rate_stays_at_or_below_alpha_when_checked_after_every_batch():
    difference, variance, _ = _simulate(0.3, 0.3, runs=1000, batches=40, batch_size=100, seed=7)
    lower, upper = _running_intervals(difference, variance, tau=0.03)
    false_verdicts = ((lower > 0) | (upper < 0)).any(axis=1).mean()
    assert false_verdicts <= ALPHA
    # The same peeking with a fixed-horizon z-test is fooled far more often: the guard matters.
    z = difference / np.sqrt(variance)
    naive = (np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1).mean()
    assert naive > 2 * ALPHA


def test_real_difference_is_found_and_the_interval_covers_the_true_effect():
    true_effect = 0.05
    difference, variance, _ = _simulate(
        0.30, 0.30 + true_effect, runs=1000, batches=60, batch_size=100, seed=11
    )
    lower, upper = _running_intervals(difference, variance, tau=true_effect)
    found = (lower > 0).any(axis=1).mean()
    assert found >= 0.9
    wrong_way = (upper < 0).any(axis=1).mean()
    assert wrong_way == 0
    # Always-valid coverage: the true effect is inside the interval at every look.
    covered_throughout = ((lower <= true_effect) & (upper >= true_effect)).all(axis=1).mean()
    assert covered_throughout >= 1 - ALPHA


def test_bad_parameters_are_refused():
    arm = ArmSummary(count=200, mean=0.5, variance=0.25)
    with pytest.raises(ValueError, match="alpha"):
        evaluate(arm, arm, alpha=1.5, minimum_effect=0.1)
    with pytest.raises(ValueError, match="minimum detectable effect"):
        evaluate(arm, arm, alpha=0.05, minimum_effect=0)

"""The sequential test against textbook values and by simulation, peeking after every batch."""

import math

import numpy as np
import pytest
from scipy import stats

from monitoring import sequential
from monitoring.sequential import ArmSummary, evaluate, planned_sample_size
from tests.monitoring import simulation

ALPHA = 0.05


def test_planned_sample_size_is_where_the_sequential_test_reaches_the_planned_power():
    # The fixed-horizon t-test's 1 570 per arm (δ = 0.05, σ² = 0.25) is far too few for a test
    # that may be looked at any time: at 1 570 it detects the effect only about half the time.
    planned = planned_sample_size(variance=0.25, minimum_effect=0.05, alpha=0.05, power=0.8)
    chance = sequential.detection_probability
    assert chance(count=planned, variance=0.25, minimum_effect=0.05, alpha=0.05) >= 0.8
    assert chance(count=planned - 1, variance=0.25, minimum_effect=0.05, alpha=0.05) < 0.8
    assert chance(count=1570, variance=0.25, minimum_effect=0.05, alpha=0.05) < 0.6
    assert planned == 3043
    # An uneven split needs more outcomes in the larger arm, fewer in the smaller one.
    uneven = planned_sample_size(
        variance=0.25, minimum_effect=0.05, alpha=0.05, power=0.8, treatment_share=0.2
    )
    assert uneven == 1902
    # Never below the minimum sample the verdict waits for.
    assert planned_sample_size(variance=1.0, minimum_effect=5.0, alpha=0.05, power=0.8) == 100


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


def _per_look_intervals(difference, variance, tau):
    width = sequential.half_width(variance, tau, ALPHA)
    return difference - width, difference + width


def test_peeking_with_a_fixed_horizon_z_test_would_be_fooled_far_more_often():
    difference, variance, _ = _simulate(0.3, 0.3, runs=1000, batches=40, batch_size=100, seed=7)
    lower, upper = _per_look_intervals(difference, variance, tau=0.03)
    false_verdicts = ((lower > 0) | (upper < 0)).any(axis=1).mean()
    assert false_verdicts <= ALPHA
    z = difference / np.sqrt(variance)
    naive = (np.abs(z) > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1).mean()
    assert naive > 2 * ALPHA


def test_the_interval_of_every_look_covers_the_true_effect_at_once():
    true_effect = 0.05
    difference, variance, _ = _simulate(
        0.30, 0.30 + true_effect, runs=1000, batches=60, batch_size=100, seed=11
    )
    lower, upper = _per_look_intervals(difference, variance, tau=true_effect)
    # Always-valid coverage: the true effect is inside the interval at every look, together.
    covered_throughout = ((lower <= true_effect) & (upper >= true_effect)).all(axis=1).mean()
    assert covered_throughout >= 1 - ALPHA


def test_estimate_lies_inside_an_interval_recomputed_at_every_look():
    first = evaluate(
        ArmSummary(count=400, mean=0.0009, variance=0.0004),
        ArmSummary(count=400, mean=0.0018, variance=0.0004),
        alpha=ALPHA,
        minimum_effect=0.0002,
    )
    later = evaluate(
        ArmSummary(count=900, mean=0.0010, variance=0.0004),
        ArmSummary(count=900, mean=0.0011, variance=0.0004),
        alpha=ALPHA,
        minimum_effect=0.0002,
    )
    for look in (first, later):
        assert look.lower < look.difference < look.upper
        assert look.difference == pytest.approx(look.upper - (look.upper - look.lower) / 2)
    # Not frozen: more data, a narrower interval around the new estimate.
    assert later.upper - later.lower < first.upper - first.lower
    assert later.upper != first.upper


@pytest.mark.parametrize(
    ("control", "treatment"),
    [
        (ArmSummary(500, 0.50, 0.25), ArmSummary(500, 0.62, 0.2356)),
        (ArmSummary(500, 0.50, 0.25), ArmSummary(500, 0.52, 0.2496)),
        (ArmSummary(500, 0.50, 0.25), ArmSummary(500, 0.38, 0.2356)),
        (ArmSummary(100, 0.10, 0.09), ArmSummary(99, 0.90, 0.09)),
    ],
)
def test_p_value_and_verdict_agree(control, treatment):
    look = evaluate(control, treatment, alpha=ALPHA, minimum_effect=0.05)
    assert (look.p_value <= ALPHA) == (look.verdict != sequential.INCONCLUSIVE)
    assert (look.lower > 0 or look.upper < 0) == (look.verdict != sequential.INCONCLUSIVE)


# --- the procedure by simulation: every metric, peeking at every look ------------------------

RUNS = 2_000
POWER = 0.8
# Simulation error of a share p over RUNS experiments is sqrt(p(1 − p)/RUNS); the power claim is
# checked to 3 of those (0.027 at p = 0.8), the false-verdict rate against α itself.
POWER_TOLERANCE = 3 * math.sqrt(POWER * (1 - POWER) / RUNS)
LATENCY_MEAN, LATENCY_VARIANCE = simulation.lognormal_moments(-2.3, 0.5)

# metric: control, treatment at the minimum effect, that effect, planning variance,
# treatment share, and the sign of the correct verdict (treatment − control).
METRICS = {
    "accuracy": (simulation.bernoulli(0.50), simulation.bernoulli(0.55), 0.05, 0.25, 0.5, +1),
    "accuracy, 20 % treatment": (
        simulation.bernoulli(0.50),
        simulation.bernoulli(0.55),
        0.05,
        0.25,
        0.2,
        +1,
    ),
    "reward": (simulation.normal(1.0, 2.0), simulation.normal(1.2, 2.0), 0.2, 4.0, 0.5, +1),
    "error rate": (simulation.bernoulli(0.05), simulation.bernoulli(0.03), 0.02, 0.0475, 0.5, -1),
    "latency": (
        simulation.lognormal(-2.3, 0.5),
        simulation.lognormal(-2.3 + math.log(0.9), 0.5),
        0.1 * LATENCY_MEAN,
        LATENCY_VARIANCE,
        0.5,
        -1,
    ),
}


@pytest.mark.parametrize("metric", list(METRICS))
def test_simulated_experiments_keep_alpha_and_reach_the_planned_power(metric):
    control, treatment, effect, variance, share, correct = METRICS[metric]
    planned = planned_sample_size(
        variance=variance, minimum_effect=effect, alpha=ALPHA, power=POWER, treatment_share=share
    )
    # A/A: both arms the same, looked at 40 times up to twice the planned sample size.
    same = simulation.simulate(
        control,
        control,
        runs=RUNS,
        smaller_arm_total=2 * planned,
        looks=40,
        alpha=ALPHA,
        minimum_effect=effect,
        treatment_share=share,
        seed=101,
    )
    false_rate = same.share(+1) + same.share(-1)
    # A/B at the minimum effect, looked at 20 times up to the planned sample size.
    different = simulation.simulate(
        control,
        treatment,
        runs=RUNS,
        smaller_arm_total=planned,
        looks=20,
        alpha=ALPHA,
        minimum_effect=effect,
        treatment_share=share,
        seed=202,
    )
    power = different.share(correct, by=planned)
    wrong_way = different.share(-correct)
    rates = (
        f"{metric}: planned {planned} per smaller arm; A/A false better/worse rate "
        f"{false_rate:.4f} (α = {ALPHA}); correct verdicts by the planned size {power:.4f} "
        f"(planned power {POWER}, tolerance {POWER_TOLERANCE:.3f}); wrong direction "
        f"{wrong_way:.4f}; {RUNS} experiments each"
    )
    print(rates)
    assert false_rate <= ALPHA, rates
    assert power >= POWER - POWER_TOLERANCE, rates
    assert wrong_way <= ALPHA, rates


def test_bad_parameters_are_refused():
    arm = ArmSummary(count=200, mean=0.5, variance=0.25)
    with pytest.raises(ValueError, match="alpha"):
        evaluate(arm, arm, alpha=1.5, minimum_effect=0.1)
    with pytest.raises(ValueError, match="minimum detectable effect"):
        evaluate(arm, arm, alpha=0.05, minimum_effect=0)

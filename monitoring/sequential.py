"""Sequential A/B statistics that stay valid however often people look.

A fixed-horizon test (a t-test run every minute) finds a "winner" in A/A tests far more often
than its α says, because every look is another chance to be fooled. This module uses the
mixture sequential probability ratio test (mSPRT, Johari, Pekelis and Walsh, "Always valid
inference", 2017) with a normal mixing distribution on the difference of means:

    Λ(θ0) = sqrt(v / (v + τ²)) · exp(τ² (Δ̂ − θ0)² / (2 v (v + τ²)))

where Δ̂ is the observed difference of means (treatment − control), v = s²_T/n_T + s²_C/n_C its
variance, and τ the spread of the mixing distribution (set to the minimum detectable effect, where
the test has the most power). Rejecting θ0 when Λ(θ0) ≥ 1/α keeps the chance of *ever* rejecting a
true θ0 at or below α, at every sample size at once. Inverting it gives an always-valid confidence
sequence for the difference: Δ̂ ± sqrt(2 v (v + τ²) / τ² · log(sqrt((v + τ²) / v) / α)).

Each look recomputes that interval from all the data so far, so the estimate is always its centre;
the p-value 1/Λ(0) is ≤ α exactly when the interval excludes zero, and the first look where it does
ends the experiment with a verdict (stopping there is what "always valid" allows). The planned
sample size is the one at which this same test reaches the planned power (`planned_sample_size`),
so "100 % of the planned sample" and the verdict speak about the same procedure.

All functions are pure; `looks` takes NumPy arrays, so thousands of simulated experiments run in
one vectorized call through the very decision rule that `evaluate` applies to one look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

BETTER = "better"
WORSE = "worse"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class ArmSummary:
    """Sufficient statistics of one arm: count, mean and (unbiased) variance of its outcomes."""

    count: int
    mean: float
    variance: float

    @classmethod
    def from_values(cls, values) -> ArmSummary:
        """Summarize raw outcomes (0/1 for accuracy, numbers for rewards)."""
        array = np.asarray(values, dtype=float)
        variance = float(array.var(ddof=1)) if array.size > 1 else 0.0
        return cls(
            count=int(array.size),
            mean=float(array.mean()) if array.size else 0.0,
            variance=variance,
        )

    @classmethod
    def from_sums(cls, *, count: int, total: float, total_of_squares: float) -> ArmSummary:
        """Summarize from running sums, as stored in the database."""
        if count == 0:
            return cls(count=0, mean=0.0, variance=0.0)
        mean = total / count
        variance = max(total_of_squares - count * mean * mean, 0.0) / max(count - 1, 1)
        return cls(count=count, mean=mean, variance=variance)


@dataclass(frozen=True)
class SequentialResult:
    """Where an experiment stands: the difference, its always-valid interval, the verdict."""

    difference: float
    lower: float
    upper: float
    # Always-valid p-value for "no difference" at this look (1 / Λ(0), capped at 1).
    p_value: float
    verdict: str
    control: ArmSummary
    treatment: ArmSummary

    def as_dict(self) -> dict:
        """A JSON-friendly form for storing with an evaluation."""
        return {
            "difference": self.difference,
            "lower": self.lower,
            "upper": self.upper,
            "p_value": self.p_value,
            "verdict": self.verdict,
            "control": vars(self.control),
            "treatment": vars(self.treatment),
        }


def difference_variance(control_count, control_variance, treatment_count, treatment_variance):
    """Variance of the difference of two independent means (vectorized)."""
    return np.asarray(treatment_variance) / np.asarray(treatment_count) + np.asarray(
        control_variance
    ) / np.asarray(control_count)


def log_likelihood_ratio(difference, variance, tau: float, theta0: float = 0.0):
    """log Λ(θ0) of the normal-mixture SPRT (vectorized)."""
    difference = np.asarray(difference, dtype=float)
    variance = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau_squared = tau * tau
    return 0.5 * np.log(variance / (variance + tau_squared)) + tau_squared * (
        difference - theta0
    ) ** 2 / (2 * variance * (variance + tau_squared))


def half_width(variance, tau: float, alpha: float):
    """Half-width of the always-valid confidence sequence around the observed difference."""
    variance = np.maximum(np.asarray(variance, dtype=float), 1e-300)
    tau_squared = tau * tau
    return np.sqrt(
        2
        * variance
        * (variance + tau_squared)
        / tau_squared
        * np.log(np.sqrt((variance + tau_squared) / variance) / alpha)
    )


def looks(
    *,
    control_count,
    control_mean,
    control_variance,
    treatment_count,
    treatment_mean,
    treatment_variance,
    alpha: float,
    minimum_effect: float,
    minimum_samples: int = 100,
):
    """The decision rule on arrays of looks: (difference, lower, upper, p_value, sign).

    `sign` is +1 where the interval lies above zero, −1 below, 0 where it still includes zero or
    an arm has fewer than `minimum_samples` outcomes (then the interval is (−∞, ∞) and p = 1).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if minimum_effect <= 0:
        raise ValueError("the minimum detectable effect must be positive")
    control_count = np.asarray(control_count, dtype=float)
    treatment_count = np.asarray(treatment_count, dtype=float)
    difference = np.asarray(treatment_mean, dtype=float) - np.asarray(control_mean, dtype=float)
    enough = np.minimum(control_count, treatment_count) >= max(minimum_samples, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = difference_variance(
            np.maximum(control_count, 1),
            control_variance,
            np.maximum(treatment_count, 1),
            treatment_variance,
        )
    # Both arms constant: any difference is exact, none is no evidence either way.
    variance = np.where(variance > 0, variance, 1e-12)
    width = half_width(variance, minimum_effect, alpha)
    log_lr = log_likelihood_ratio(difference, variance, minimum_effect)
    lower = np.where(enough, difference - width, -np.inf)
    upper = np.where(enough, difference + width, np.inf)
    p_value = np.where(enough, np.minimum(1.0, np.exp(-np.minimum(log_lr, 700.0))), 1.0)
    sign = np.where(lower > 0, 1, np.where(upper < 0, -1, 0))
    return difference, lower, upper, p_value, sign


def evaluate(
    control: ArmSummary,
    treatment: ArmSummary,
    *,
    alpha: float,
    minimum_effect: float,
    higher_is_better: bool = True,
    minimum_samples: int = 100,
) -> SequentialResult:
    """One look at an experiment, from all its outcomes so far.

    The interval is centred on the observed difference and recomputed at every look; a verdict
    is given the first time it excludes zero (then p ≤ α). No verdict before each arm has
    `minimum_samples` outcomes (the variance estimate needs them).
    """
    difference, lower, upper, p_value, sign = looks(
        control_count=control.count,
        control_mean=control.mean,
        control_variance=control.variance,
        treatment_count=treatment.count,
        treatment_mean=treatment.mean,
        treatment_variance=treatment.variance,
        alpha=alpha,
        minimum_effect=minimum_effect,
        minimum_samples=minimum_samples,
    )
    if int(sign) == 0:
        verdict = INCONCLUSIVE
    elif (int(sign) > 0) == higher_is_better:
        verdict = BETTER
    else:
        verdict = WORSE
    return SequentialResult(
        float(difference), float(lower), float(upper), float(p_value), verdict, control, treatment
    )


def detection_probability(
    *, count, variance: float, minimum_effect: float, alpha: float, treatment_share: float = 0.5
):
    """Chance that the interval excludes zero at the look where the smaller arm has `count`
    outcomes, when the true difference is the minimum effect (normal approximation).

    A verdict at that look is one way to have a verdict by then, so this is a lower bound on the
    chance of a verdict by that sample size, however often the experiment was looked at before.
    """
    count = np.asarray(count, dtype=float)
    smaller = min(treatment_share, 1 - treatment_share)
    # Smaller arm m, larger arm m·(1 − s)/s: v = σ²/m + σ²·s/(m(1 − s)) = σ²/(m(1 − s)).
    difference_var = variance / (count * (1 - smaller))
    width = half_width(difference_var, minimum_effect, alpha)
    spread = np.sqrt(difference_var)
    return stats.norm.cdf((minimum_effect - width) / spread) + stats.norm.cdf(
        (-minimum_effect - width) / spread
    )


def planned_sample_size(
    *,
    variance: float,
    minimum_effect: float,
    alpha: float,
    power: float,
    treatment_share: float = 0.5,
    minimum_samples: int = 100,
) -> int:
    """Outcomes the smaller arm needs for this sequential test to reach `power` on the minimum
    effect: the smallest n with `detection_probability(n) ≥ power` (at least `minimum_samples`).

    It is larger than a fixed-horizon t-test's n, the price of being allowed to look at any time;
    the progress bar uses it, so reaching 100 % means the planned power has been reached.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be between 0 and 1")
    if minimum_effect <= 0:
        raise ValueError("the minimum detectable effect must be positive")
    if variance <= 0:
        raise ValueError("the planning variance must be positive")
    if not 0 < treatment_share < 1:
        raise ValueError("the treatment share must be between 0 and 1")

    def enough(count: int) -> bool:
        probability = detection_probability(
            count=count,
            variance=variance,
            minimum_effect=minimum_effect,
            alpha=alpha,
            treatment_share=treatment_share,
        )
        return float(probability) >= power

    low, high = 1, max(minimum_samples, 2)
    while not enough(high):
        low, high = high, high * 2
        if high > 10**12:
            raise ValueError("the minimum effect is too small for any practical sample size")
    # The detection probability rises with the sample size: bisect for the first n that passes.
    while low < high:
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle + 1
    return max(high, minimum_samples)


def proportion_variance(rate: float) -> float:
    """Variance of a 0/1 outcome with the given success rate."""
    return rate * (1 - rate)

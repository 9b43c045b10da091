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
Intersecting the intervals seen so far keeps the sequence valid and makes verdicts monotone.

All functions are pure and accept NumPy arrays, so a thousand simulated experiments run in one
vectorized call.
"""

from __future__ import annotations

import math
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


def evaluate(
    control: ArmSummary,
    treatment: ArmSummary,
    *,
    alpha: float,
    minimum_effect: float,
    higher_is_better: bool = True,
    minimum_samples: int = 100,
    previous: tuple[float, float] | None = None,
) -> SequentialResult:
    """One look at an experiment.

    `previous` is the intersection of earlier intervals; the new interval is intersected with it,
    which keeps the sequence valid and stops a verdict from flipping back. No verdict is given
    before each arm has `minimum_samples` outcomes (the variance estimate needs them).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if minimum_effect <= 0:
        raise ValueError("the minimum detectable effect must be positive")
    difference = treatment.mean - control.mean
    if min(control.count, treatment.count) < max(minimum_samples, 2):
        return SequentialResult(
            difference, -math.inf, math.inf, 1.0, INCONCLUSIVE, control, treatment
        )
    variance = float(
        difference_variance(control.count, control.variance, treatment.count, treatment.variance)
    )
    if variance <= 0:
        # Both arms constant: any difference is exact, none is no evidence either way.
        variance = 1e-12
    width = float(half_width(variance, minimum_effect, alpha))
    lower, upper = difference - width, difference + width
    if previous is not None:
        lower, upper = max(lower, previous[0]), min(upper, previous[1])
    log_lr = float(log_likelihood_ratio(difference, variance, minimum_effect))
    p_value = float(min(1.0, math.exp(-log_lr)))
    if lower > 0:
        verdict = BETTER if higher_is_better else WORSE
    elif upper < 0:
        verdict = WORSE if higher_is_better else BETTER
    else:
        verdict = INCONCLUSIVE
    return SequentialResult(difference, lower, upper, p_value, verdict, control, treatment)


def planned_sample_size(
    *, variance: float, minimum_effect: float, alpha: float, power: float
) -> int:
    """Per-arm sample size of the classic two-sided fixed-horizon test, as a planning guide.

    n = (z₁₋α/₂ + z_power)² · 2σ² / δ². The sequential test usually stops sooner on a real
    effect and a little later on none; the progress bar uses this number as its scale.
    """
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be between 0 and 1")
    if minimum_effect <= 0:
        raise ValueError("the minimum detectable effect must be positive")
    z_alpha = stats.norm.ppf(1 - alpha / 2)
    z_power = stats.norm.ppf(power)
    return math.ceil((z_alpha + z_power) ** 2 * 2 * variance / minimum_effect**2)


def proportion_variance(rate: float) -> float:
    """Variance of a 0/1 outcome with the given success rate."""
    return rate * (1 - rate)

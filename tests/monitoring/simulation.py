"""Seeded simulations of A/B experiments for the sequential test: every look, vectorized.

Each simulated experiment draws raw outcomes for both arms, and at every look (after each batch)
the decision rule of `monitoring.sequential.looks` is applied to everything seen so far, exactly
as `experiment_evaluate` does once a minute. The first look whose interval excludes zero is the
verdict (the experiment concludes there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitoring import sequential

Sampler = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]

CHUNK = 250  # experiments per vectorized block (bounds memory)


def bernoulli(rate: float) -> Sampler:
    """0/1 outcomes (accuracy, error rate)."""
    return lambda generator, shape: (generator.random(shape) < rate).astype(float)


def normal(mean: float, deviation: float) -> Sampler:
    """Rewards: real numbers around a mean."""
    return lambda generator, shape: generator.normal(mean, deviation, shape)


def lognormal(log_mean: float, log_deviation: float) -> Sampler:
    """Latencies: positive and right-skewed."""
    return lambda generator, shape: generator.lognormal(log_mean, log_deviation, shape)


def lognormal_moments(log_mean: float, log_deviation: float) -> tuple[float, float]:
    """Mean and variance of a lognormal distribution."""
    mean = float(np.exp(log_mean + log_deviation**2 / 2))
    return mean, mean**2 * float(np.expm1(log_deviation**2))


def _cumulative(values: np.ndarray, counts: np.ndarray):
    """Count, mean and unbiased variance of the first `counts[k]` values, for every look k."""
    sums = np.cumsum(values, axis=1)[:, counts - 1]
    squares = np.cumsum(values * values, axis=1)[:, counts - 1]
    mean = sums / counts
    variance = np.maximum(squares - counts * mean * mean, 0.0) / np.maximum(counts - 1, 1)
    return mean, variance


@dataclass(frozen=True)
class Simulation:
    """Per experiment: the sign of the first verdict (0 = none) and the smaller arm's count then."""

    first_sign: np.ndarray
    first_count: np.ndarray

    def share(self, sign: int, *, by: float = np.inf) -> float:
        """Share of experiments whose first verdict had `sign` and came by `by` outcomes."""
        return float(np.mean((self.first_sign == sign) & (self.first_count <= by)))


def simulate(
    control: Sampler,
    treatment: Sampler,
    *,
    runs: int,
    smaller_arm_total: int,
    looks: int,
    alpha: float,
    minimum_effect: float,
    treatment_share: float = 0.5,
    seed: int,
) -> Simulation:
    """`runs` experiments looked at `looks` times, up to `smaller_arm_total` outcomes in the
    smaller arm (the larger arm gets the matching share)."""
    generator = np.random.default_rng(seed)
    smaller_counts = np.unique(np.linspace(0, smaller_arm_total, looks + 1)[1:].astype(int))
    ratio = (1 - treatment_share) / treatment_share
    if treatment_share <= 0.5:
        treatment_counts = smaller_counts
        control_counts = np.round(smaller_counts * ratio).astype(int)
    else:
        control_counts = smaller_counts
        treatment_counts = np.round(smaller_counts / ratio).astype(int)
    first_sign = np.zeros(runs, dtype=int)
    first_count = np.full(runs, np.inf)
    for start in range(0, runs, CHUNK):
        size = min(CHUNK, runs - start)
        control_mean, control_variance = _cumulative(
            control(generator, (size, int(control_counts[-1]))), control_counts
        )
        treatment_mean, treatment_variance = _cumulative(
            treatment(generator, (size, int(treatment_counts[-1]))), treatment_counts
        )
        *_, sign = sequential.looks(
            control_count=control_counts,
            control_mean=control_mean,
            control_variance=control_variance,
            treatment_count=treatment_counts,
            treatment_mean=treatment_mean,
            treatment_variance=treatment_variance,
            alpha=alpha,
            minimum_effect=minimum_effect,
        )
        crossed = sign != 0
        has_verdict = crossed.any(axis=1)
        first = crossed.argmax(axis=1)
        rows = np.arange(size)
        first_sign[start : start + size] = np.where(has_verdict, sign[rows, first], 0)
        first_count[start : start + size] = np.where(has_verdict, smaller_counts[first], np.inf)
    return Simulation(first_sign, first_count)

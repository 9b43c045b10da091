"""Decisions deployments asks of the apps above it, which register them in AppConfig.ready().

Deployments must never import monitoring (or any higher app), yet a canary step waits for the
rollback policy's verdict and the endpoint page shows feedback accuracy. So deployments names the
question here and a higher app answers it: monitoring registers its guardrail gate, its guardrail
evaluation and its endpoint page figures in `MonitoringConfig.ready()`. With nothing registered,
every step is allowed and the page shows only what deployments knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployments.models import Endpoint, Release

# (endpoint, release) -> (allowed, reason): may a baked canary step move on?
RolloutGate = Callable[..., tuple[bool, str]]
# (endpoint_ids) -> None: judge these rolling-out endpoints now (a breach may roll back).
RolloutReview = Callable[..., Any]
# (endpoint) -> dict: extra context for the endpoint page.
EndpointPageContext = Callable[..., dict[str, Any]]

_rollout_gates: list[RolloutGate] = []
_rollout_reviews: list[RolloutReview] = []
_endpoint_page_contexts: list[EndpointPageContext] = []


def _register(registry: list, hook: Callable) -> Callable:
    # ready() can run more than once in one process (tests); register each hook once.
    if hook not in registry:
        registry.append(hook)
    return hook


def register_rollout_gate(gate: RolloutGate) -> RolloutGate:
    """Add a gate that every canary step must pass: `gate(endpoint=, release=) -> (bool, str)`."""
    return _register(_rollout_gates, gate)


def register_rollout_review(review: RolloutReview) -> RolloutReview:
    """Add a judgement run before canaries advance: `review(endpoint_ids=[...])`."""
    return _register(_rollout_reviews, review)


def register_endpoint_page_context(provider: EndpointPageContext) -> EndpointPageContext:
    """Add context to the endpoint page: `provider(endpoint=) -> dict`."""
    return _register(_endpoint_page_contexts, provider)


def rollout_step_allowed(*, endpoint: Endpoint, release: Release) -> tuple[bool, str]:
    """Whether every registered gate lets the canary move on; the first refusal gives the reason."""
    reasons = []
    for gate in _rollout_gates:
        allowed, reason = gate(endpoint=endpoint, release=release)
        if not allowed:
            return False, reason
        reasons.append(reason)
    return True, "; ".join(reasons) or "no rollout gate"


def rollout_review(*, endpoint_ids: Iterable[int]) -> None:
    """Run every registered review of the given rolling-out endpoints."""
    endpoint_ids = list(endpoint_ids)
    for review in _rollout_reviews:
        review(endpoint_ids=endpoint_ids)


def endpoint_page_context(*, endpoint: Endpoint) -> dict[str, Any]:
    """What the registered providers add to the endpoint page."""
    context: dict[str, Any] = {}
    for provider in _endpoint_page_contexts:
        context.update(provider(endpoint=endpoint))
    return context

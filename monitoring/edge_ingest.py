"""Metric summaries from edge agents into the same per-minute rollups the scraper writes.

An agent cannot be scraped (it is behind NAT, or offline), so it computes the growth of its
version server's counters and histograms itself and sends one summary per interval, counts and
histograms only. Each summary lands in the MetricPoint row of its own minute, so the monitoring
pages, alerts and drift checks read edge traffic exactly like any other target's.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from deployments.models import Endpoint
from monitoring import exposition
from monitoring.models import Component
from monitoring.scraper import _add_to_point, minute_of

EDGE_VARIANT = "edge"


@transaction.atomic
def edge_summary_record(*, endpoint: Endpoint, version_id: int, summary: dict[str, Any]) -> bool:
    """Add one validated summary (see edge.services.check_heartbeat) to its minute's
    row; False when it held nothing."""
    contribution = exposition.Contribution(variant=EDGE_VARIANT)
    for name in (*contribution.COUNTERS, *contribution.FLOATS, *contribution.HISTOGRAMS):
        if name in summary:
            setattr(contribution, name, summary[name])
    contribution.features = dict(summary.get("features") or {})
    if contribution.is_empty:
        return False
    _add_to_point(
        endpoint_id=endpoint.pk,
        version_id=version_id,
        component=Component.SERVER,
        minute=minute_of(summary["at"]),
        contribution=contribution,
    )
    return True


def edge_summary_receive(sender, *, endpoint: Endpoint, version_id: int, summary: dict, **kwargs):
    """Receiver of deployments' `edge_summary_received`: store the summary."""
    edge_summary_record(endpoint=endpoint, version_id=version_id, summary=summary)

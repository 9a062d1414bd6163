"""/metrics of the real operator against what the status says and what Lucid issued."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from .harness import wait_for
from .test_operator import setup_grant


def samples(text: str, name: str = "reporting") -> dict[tuple[str, str], float]:
    """(metric, reason label) -> value for the grant `name`."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("name") == name:
                found[(sample.name, sample.labels.get("reason", ""))] = sample.value
    return found


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_metrics_match_status_and_lucid_and_vanish_after_deletion(cluster, lucid, start_operator):
    grant_id = setup_grant(cluster, lucid)
    proc = start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    # Read a consistent moment: the status and the metrics after the same refresh.
    wait_for(lambda: lucid.grant_info(grant_id).rotations >= 2, timeout=20)

    def consistent():
        status = (cluster.grant("reporting") or {}).get("status") or {}
        found = samples(proc.metrics())
        info = lucid.grant_info(grant_id)
        access = found.get(("lucidgrant_access_token_expiry_timestamp_seconds", ""))
        if not status.get("accessTokenExpiresAt") or access is None:
            return None
        if (
            max(
                abs(access - info.access_expires_at),
                abs(ts(status["accessTokenExpiresAt"]) - info.access_expires_at),
            )
            > 2.0
        ):
            return None  # a refresh happened between the reads, or its status is not written yet
        return status, found, info

    status, found, info = wait_for(consistent, timeout=20, what="a consistent reading")
    access = found[("lucidgrant_access_token_expiry_timestamp_seconds", "")]
    assert abs(access - ts(status["accessTokenExpiresAt"])) <= 1.0
    refresh = found[("lucidgrant_refresh_token_expiry_timestamp_seconds", "")]
    assert info.refresh_expires_at is not None
    assert abs(refresh - info.refresh_expires_at) <= 2.0, "the refresh expiry Lucid issued"
    assert abs(refresh - ts(status["refreshTokenExpiresAt"])) <= 1.0
    assert (
        abs(
            found[("lucidgrant_last_refresh_timestamp_seconds", "")] - ts(status["lastRefreshTime"])
        )
        <= 1.0
    )
    assert found[("lucidgrant_ready", "")] == 1
    assert found[("lucidgrant_reauthorization_required", "")] == 0
    assert found[("lucidgrant_consecutive_failures", "")] == status["consecutiveFailures"] == 0
    assert found[("lucidgrant_suspended", "")] == 0

    cluster.delete_grant("reporting")
    wait_for(lambda: not samples(proc.metrics()), what="the grant's series gone")

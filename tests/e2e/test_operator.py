"""The real operator process against the emulated Kubernetes API and the Lucid emulator: what
only a real process shows (rotations over time, outages longer than a token's life, two
processes, SIGTERM, garbage collection, CRD validation). Each reason and transition of the
refresh path is tested in process, without sleeping, in tests/core/."""

from __future__ import annotations

import signal
import time

import pytest

from lucidgrant_testbed.lucid import LucidEmulator

from .harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    SCOPES,
    Cluster,
    grant_spec,
    wait_for,
)


def authorize(cluster: Cluster, lucid: LucidEmulator, secret: str = "lucid-bootstrap") -> str:
    """What a person does once: a grant at Lucid, its refresh token put in a Secret."""
    tokens = lucid.issue_grant(CLIENT_ID, SCOPES)
    cluster.put_secret(secret, {"refresh_token": tokens["refresh_token"]})
    return str(lucid.grant_of(tokens["refresh_token"]))


def authorized_grants(
    cluster: Cluster,
    lucid: LucidEmulator,
    names: list[str],
    labels: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Grants each with its own Lucid grant, bootstrap Secret and token Secret; their Lucid ids."""
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    ids = []
    for name in names:
        ids.append(authorize(cluster, lucid, f"{name}-boot"))
        spec = grant_spec(
            authorization={"refreshTokenSecretRef": {"name": f"{name}-boot"}},
            accessTokenSecret={"name": f"{name}-token"},
        )
        response = cluster.create_grant(name, spec, labels=(labels or {}).get(name))
        assert response.status_code == 201, response.text
    return ids


def setup_grant(cluster: Cluster, lucid: LucidEmulator, name: str = "reporting", **spec) -> str:
    cluster.put_secret("lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    grant_id = authorize(cluster, lucid)
    response = cluster.create_grant(name, grant_spec(**spec))
    assert response.status_code == 201, response.text
    return grant_id


def live_token_written(cluster: Cluster, lucid: LucidEmulator, grant_id: str, secret="lucid-token"):
    info = lucid.grant_info(grant_id)
    data = cluster.secret(secret) or {}
    return data.get("access_token") == info.access_token and info.rotations


# Access tokens of 3 s, rotated every 2 s: the tests below wait for rotations or outlive a
# token's life.
@pytest.mark.parametrize("access_ttl", [3.0])
def test_rotations_keep_the_one_live_token_in_the_secret(cluster, lucid, start_operator):
    grant_id = setup_grant(cluster, lucid)
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 6 and time.monotonic() < deadline:
        info = lucid.grant_info(grant_id)
        data = cluster.secret("lucid-token") or {}
        state = cluster.secret("reporting-lucidgrant-state") or {}
        if data.get("access_token") == info.access_token:
            seen.add(info.access_token)
            assert state.get("refresh_token") in (info.refresh_token, None) or info.rotations
        time.sleep(0.2)
    assert len(seen) >= 6, f"saw {len(seen)} distinct live tokens in the Secret"
    info = lucid.grant_info(grant_id)
    assert (cluster.secret("reporting-lucidgrant-state") or {})[
        "refresh_token"
    ] == info.refresh_token
    assert lucid.invalid_grant_count == 0
    data = cluster.secret("lucid-token") or {}
    assert set(data) == {"access_token", "expires_at", "token_type"}
    status = (cluster.grant("reporting") or {})["status"]
    assert status["lucidUserId"] == "1001"
    assert "offline_access" in status["grantedScopes"]
    assert status["consecutiveFailures"] == 0
    assert not cluster.is_true("reporting", "ReauthorizationRequired")


@pytest.mark.parametrize("access_ttl", [3.0])
def test_outage_longer_than_token_lifetime_recovers_without_a_person(
    cluster, lucid, start_operator, access_ttl
):
    grant_id = setup_grant(cluster, lucid)
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    lucid.faults.outage(2.5 * access_ttl)
    wait_for(lambda: not cluster.is_true("reporting", "Ready"), timeout=20, what="Ready false")
    ready = cluster.condition("reporting", "Ready") or {}
    assert ready["reason"] in ("ProviderUnavailable", "AccessTokenExpired")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
    wait_for(lambda: cluster.is_true("reporting", "Ready"), timeout=40, what="recovery")
    assert not cluster.is_true("reporting", "ReauthorizationRequired")
    assert live_token_written(cluster, lucid, grant_id)
    assert lucid.invalid_grant_count == 0
    reasons = {e["reason"] for e in cluster.events()}
    assert {"RefreshFailing", "Recovered"} <= reasons


@pytest.mark.parametrize("access_ttl", [3.0])
def test_two_operators_never_refresh_the_same_grant_twice(cluster, lucid, start_operator):
    ids = authorized_grants(cluster, lucid, [f"g{i}" for i in range(5)])
    start_operator()
    start_operator()
    wait_for(
        lambda: all(lucid.grant_info(g).rotations >= 5 for g in ids),
        timeout=60,
        what="five rotations of every grant, both processes competing",
    )
    assert lucid.invalid_grant_count == 0
    for i in range(len(ids)):
        assert cluster.is_true(f"g{i}", "Ready")
        assert not cluster.is_true(f"g{i}", "ReauthorizationRequired")


def test_sigterm_in_the_middle_of_refreshes_loses_nothing(cluster, lucid, start_operator):
    grant_id = setup_grant(cluster, lucid)
    first = start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    rotations = lucid.grant_info(grant_id).rotations
    # Lucid rotates at once but answers 2 s later: SIGTERM lands while the answer is on its way.
    lucid.faults.slow(2.0, process_first=True)
    cluster.patch_grant(
        "reporting", {"metadata": {"annotations": {"lucidgrant.dev/refresh-now": "1"}}}
    )
    wait_for(lambda: lucid.grant_info(grant_id).rotations > rotations, timeout=5, what="rotation")
    assert first.stop(signal.SIGTERM) == 0
    lucid.faults.clear()
    stored = (cluster.secret("reporting-lucidgrant-state") or {})["refresh_token"]
    assert stored == lucid.grant_info(grant_id).refresh_token, "the live refresh token is stored"
    rotations = lucid.grant_info(grant_id).rotations
    start_operator()
    wait_for(lambda: lucid.grant_info(grant_id).rotations >= rotations + 3, timeout=40)
    assert lucid.invalid_grant_count == 0
    assert not cluster.is_true("reporting", "ReauthorizationRequired")


def test_bad_specs_are_refused_with_field_paths(cluster):
    response = cluster.create_grant("bad", grant_spec(tokenKind="bot"))
    assert response.status_code == 422
    assert "spec.tokenKind" in response.text
    response = cluster.create_grant(
        "bad",
        grant_spec(
            authorization={"refreshTokenSecretRef": {"name": "a"}, "codeSecretRef": {"name": "b"}}
        ),
    )
    assert response.status_code == 422
    assert "exactly one of refreshTokenSecretRef or codeSecretRef" in response.text
    response = cluster.create_grant("bad", grant_spec(refreshBefore="soon"))
    assert response.status_code == 422 and "spec.refreshBefore" in response.text
    response = cluster.create_grant("bad", {"scopes": ["x"]})
    assert response.status_code == 422 and "spec.clientSecretRef" in response.text


def test_deletion_with_revoke_policy_revokes_and_owned_secrets_go(cluster, lucid, start_operator):
    grant_id = setup_grant(cluster, lucid, deletionPolicy="Revoke")
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    cluster.delete_grant("reporting")
    wait_for(lambda: cluster.grant("reporting") is None, what="grant gone")
    assert lucid.grant_info(grant_id).revoked
    wait_for(lambda: cluster.secret("lucid-token") is None, what="owned Secret collected")
    assert cluster.secret("reporting-lucidgrant-state") is None

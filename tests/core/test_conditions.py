"""The conditions table of docs/reference.md, row by row: what a reconcile's findings make the
status say (Publisher.outcome, then conditions_for), and that the table documents exactly the
conditions the operator writes. Then, through the real reconcile: one log line per condition
change and one Event per transition."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lucidgrant.cache import Facts, GrantRecord
from lucidgrant.names import Reason
from lucidgrant.publish import Progress
from lucidgrant.state_secret import GrantState
from lucidgrant.status import conditions_for
from lucidgrant.timing import rfc3339

from .world import NS, World, grant_body

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
NOW = 1_800_000_000.0
COMMAND = f"Run: kubectl lucidgrant authorize g -n {NS}"

HELD = GrantState(
    "7",
    refresh_token="rt",
    access_token="at",
    access_expires_at=NOW + 600,
    access_lifetime=3600,
    refresh_expires_at=NOW + 86400,
    scopes=("a.b", "offline_access"),
)
EXPIRED = replace(HELD, access_expires_at=NOW - 1)
NEVER = GrantState("1")
P = Reason.PROVIDER_UNAVAILABLE

# (case, spec changes, progress, Ready, ReauthorizationRequired)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, str], tuple[str, str]]] = [
    (
        "refreshed",
        {},
        {"state": HELD, "consumer_written": True},
        ("True", "Refreshed"),
        ("False", "Authorized"),
    ),
    (
        "refreshed while refreshing fails",
        {},
        {"state": HELD, "consumer_written": True, "problem": (P, "HTTP 503")},
        ("True", "Refreshed"),
        ("False", "Authorized"),
    ),
    (
        "expired",
        {},
        {"state": EXPIRED, "consumer_written": True},
        ("False", "AccessTokenExpired"),
        ("False", "Authorized"),
    ),
    (
        "outage",
        {},
        {"state": EXPIRED, "consumer_written": True, "problem": (P, "HTTP 503")},
        ("False", "ProviderUnavailable"),
        ("False", "Authorized"),
    ),
    (
        "client rejected",
        {},
        {"state": EXPIRED, "problem": (Reason.CLIENT_REJECTED, "x")},
        ("False", "ClientRejected"),
        ("False", "Authorized"),
    ),
    (
        "client Secret missing, grant held",
        {},
        {"state": EXPIRED, "problem": (Reason.MISSING_SECRET, "x")},
        ("False", "MissingSecret"),
        ("False", "Authorized"),
    ),
    (
        "client Secret missing, never authorized",
        {},
        {"state": NEVER, "problem": (Reason.MISSING_SECRET, "x")},
        ("False", "MissingSecret"),
        ("True", "AwaitingAuthorization"),
    ),
    (
        "client Secret missing, an authorization waits to be adopted",
        {},
        {"state": NEVER, "problem": (Reason.MISSING_SECRET, "x"), "bootstrap_given": True},
        ("False", "MissingSecret"),
        ("Unknown", "MissingSecret"),
    ),
    (
        "Lucid down while an authorization waits to be adopted",
        {},
        {"state": NEVER, "problem": (Reason.PROVIDER_UNAVAILABLE, "x"), "bootstrap_given": True},
        ("False", "ProviderUnavailable"),
        ("Unknown", "ProviderUnavailable"),
    ),
    (
        "the client is refused while an authorization waits to be adopted",
        {},
        {"state": NEVER, "problem": (Reason.CLIENT_REJECTED, "x"), "bootstrap_given": True},
        ("False", "ClientRejected"),
        ("Unknown", "ClientRejected"),
    ),
    (
        "the client Secret is not marked while an authorization waits to be adopted",
        {},
        {"state": NEVER, "problem": (Reason.SECRET_NOT_MARKED, "x"), "bootstrap_given": True},
        ("False", "SecretNotMarked"),
        ("Unknown", "SecretNotMarked"),
    ),
    (
        "an authorization waits to be adopted, nothing else to say",
        {},
        {"state": NEVER, "bootstrap_given": True},
        ("False", "AwaitingAuthorization"),
        ("Unknown", "AwaitingAuthorization"),
    ),
    (
        "consumer Secret taken",
        {},
        {"state": HELD, "problem": (Reason.SECRET_CONFLICT, "x")},
        ("False", "SecretConflict"),
        ("False", "Authorized"),
    ),
    (
        "suspended",
        {"suspend": True},
        {"state": HELD, "suspended": True},
        ("False", "Suspended"),
        ("False", "Authorized"),
    ),
    (
        "suspended, never authorized",
        {"suspend": True},
        {"state": NEVER, "suspended": True},
        ("False", "Suspended"),
        ("True", "AwaitingAuthorization"),
    ),
    (
        "invalid spec",
        {"tokenKind": "bot"},
        {"problem": (Reason.INVALID_SPEC, "x")},
        ("False", "InvalidSpec"),
        ("Unknown", "InvalidSpec"),
    ),
    (
        "API down before the state was read",
        {},
        {"problem": (Reason.KUBERNETES_UNAVAILABLE, "x")},
        ("False", "KubernetesUnavailable"),
        ("Unknown", "KubernetesUnavailable"),
    ),
    (
        "a Secret named like the state Secret is not the grant's",
        {},
        {"problem": (Reason.SECRET_CONFLICT, "x")},
        ("False", "SecretConflict"),
        ("Unknown", "SecretConflict"),
    ),
    (
        "the client Secret is not marked for lucidgrant",
        {},
        {"state": NEVER, "problem": (Reason.SECRET_NOT_MARKED, "x")},
        ("False", "SecretNotMarked"),
        ("True", "AwaitingAuthorization"),
    ),
    (
        "API down after the state was read",
        {},
        {"state": EXPIRED, "problem": (Reason.KUBERNETES_UNAVAILABLE, "x")},
        ("False", "KubernetesUnavailable"),
        ("False", "Authorized"),
    ),
    (
        "never authorized",
        {},
        {"state": NEVER, "reauth": (Reason.AWAITING_AUTHORIZATION, "x")},
        ("False", "AwaitingAuthorization"),
        ("True", "AwaitingAuthorization"),
    ),
    *[
        (
            f"dead: {reason}",
            {},
            {
                "state": replace(HELD, dead_reason=reason),
                "consumer_written": True,
                "reauth": (reason, "x"),
            },
            ("False", str(reason)),
            ("True", str(reason)),
        )
        for reason in (Reason.INVALID_GRANT, Reason.REFRESH_TOKEN_EXPIRED, Reason.SCOPES_REJECTED)
    ],
    (
        "scopes widened",
        {},
        {"state": HELD, "consumer_written": True, "reauth": (Reason.SCOPES_CHANGED, "x")},
        ("True", "Refreshed"),
        ("True", "ScopesChanged"),
    ),
    *[
        (
            f"new authorization refused: {reason}, token live",
            {},
            {"state": HELD, "consumer_written": True, "problem": (reason, "x")},
            ("True", "Refreshed"),
            ("False", "Authorized"),
        )
        for reason in (Reason.INVALID_GRANT, Reason.SCOPES_REJECTED)
    ],
    *[
        (
            f"new authorization refused: {reason}, token expired",
            {},
            {"state": EXPIRED, "consumer_written": True, "problem": (reason, "x")},
            ("False", str(reason)),
            ("False", "Authorized"),
        )
        for reason in (Reason.INVALID_GRANT, Reason.SCOPES_REJECTED)
    ],
]


def conditions(world: World, spec: dict[str, Any], progress: dict[str, Any], name: str = "g"):
    record: GrantRecord = world.put_grant(grant_body(name, **spec))
    outcome = world.reconciler.publisher.outcome((NS, name), record, Progress(Facts(), **progress))
    return conditions_for(outcome, NOW, rfc3339)


@pytest.mark.parametrize(
    ("case", "spec", "progress", "ready", "reauth"), CASES, ids=[c[0] for c in CASES]
)
async def test_the_conditions_table(world, case, spec, progress, ready, reauth):
    got_ready, got_reauth = conditions(world, spec, progress)
    assert (got_ready.status_text, got_ready.reason) == ready, case
    assert (got_reauth.status_text, got_reauth.reason) == reauth, case
    # Whoever must act is told the command; a condition nobody must act on does not say it.
    for cond in (got_ready, got_reauth):
        if Reason(cond.reason).needs_person and cond.status is not None:
            assert cond.message.endswith(COMMAND) == (got_reauth.status is True), (case, cond)


def documented() -> set[tuple[str, str, str]]:
    """(condition, status, reason) of every row of the table in docs/reference.md."""
    text = REFERENCE.read_text().split("## Conditions and reasons")[1].split("\n## ")[0]
    rows: set[tuple[str, str, str]] = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"(Ready|ReauthorizationRequired)=(True|False|Unknown)", cells[0])
        if len(cells) == 3 and match:
            reasons = re.sub(r"\(.*?\)", "", cells[1])
            condition, status = match.groups()
            rows |= {(condition, status, r.strip()) for r in reasons.split(",")}
    return rows


def test_the_reference_documents_exactly_what_status_says():
    said = {("Ready", *c[3]) for c in CASES} | {("ReauthorizationRequired", *c[4]) for c in CASES}
    assert documented() == said


async def test_a_capped_refresh_before_is_said(world):
    ready, _ = conditions(
        world, {"refreshBefore": "30m"}, {"state": HELD, "consumer_written": True}
    )
    assert (
        "spec.refreshBefore (30m) is more than a third of the access token's lifetime (1h)"
        in ready.message
    )
    assert "refreshes happen 20m before expiry instead; set it to 20m or less" in ready.message
    plain, _ = conditions(
        world, {"refreshBefore": "20m"}, {"state": HELD, "consumer_written": True}, name="h"
    )
    assert "refreshBefore" not in plain.message


def changes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "lucidgrant.publish" and r.getMessage().startswith("grant ns/g: ")
    ]


async def test_each_change_is_logged_once_and_posted_as_one_event(world, caplog):
    # Never authorized, and its client Secret is missing: both facts show, each once.
    world.put_grant(grant_body())
    await world.reconcile()
    assert world.condition("Ready") == ("False", "MissingSecret")
    assert world.condition("ReauthorizationRequired") == ("True", "AwaitingAuthorization")
    logged = changes(caplog)
    assert [m.split(":")[1].strip() for m in logged] == [
        "Ready=False MissingSecret",
        "ReauthorizationRequired=True AwaitingAuthorization",
    ]
    assert "The client Secret 'client' (spec.clientSecretRef.name) does not exist" in logged[0]
    assert logged[1].endswith(COMMAND)
    assert [r.levelno for r in caplog.records if r.getMessage() in logged] == [logging.WARNING] * 2
    assert world.event_reasons() == ["MissingSecret", "AwaitingAuthorization"]
    await world.reconcile()
    assert len(changes(caplog)) == 2 and len(world.event_reasons()) == 2

    # Authorized: Ready turns true (announced as Authorized), ReauthorizationRequired false.
    world.put_secret("client", {"client_id": "client-1", "client_secret": "secret-1"})
    world.put_secret("boot", {"refresh_token": world.lucid.issue()})
    await world.reconcile()
    assert world.condition("Ready") == ("True", "Refreshed")
    assert changes(caplog)[2:] == [
        changes(caplog)[2],
        "grant ns/g: ReauthorizationRequired=False Authorized: The operator holds a grant (a refresh token).",
    ]
    assert world.event_reasons()[2:] == ["Authorized"]

    # Revoked at Lucid: Ready and ReauthorizationRequired both say InvalidGrant: one event.
    world.lucid.grants[world.lucid.live_refresh_token()].alive = False
    world.clock.now += 3600
    await world.reconcile()
    assert world.condition("ReauthorizationRequired") == ("True", "InvalidGrant")
    assert world.event_reasons()[3:] == ["InvalidGrant"]
    assert [m.split(":")[1].strip() for m in changes(caplog)[4:]] == [
        "Ready=False InvalidGrant",
        "ReauthorizationRequired=True InvalidGrant",
    ]
    (event,) = world.kube.events()[3:]
    assert event["message"].endswith(f"{COMMAND} (or open https://ops.test/authorize)")


async def test_an_invalid_spec_leaves_reauthorization_unknown(world):
    world.put_grant(grant_body(tokenKind="bot"))
    await world.reconcile()
    assert world.condition("Ready") == ("False", "InvalidSpec")
    assert world.condition("ReauthorizationRequired") == ("Unknown", "InvalidSpec")
    assert world.event_reasons() == ["InvalidSpec"]


async def test_a_refused_new_authorization_says_why_and_keeps_the_grant(world):
    world.authorized_grant()
    await world.reconcile()
    world.put_secret("boot", {"refresh_token": "not-a-live-token"})
    await world.reconcile()
    (refused,) = [e for e in world.kube.events() if e["reason"] == "AuthorizationRefused"]
    assert refused["message"] == (
        "Lucid answered invalid_grant (HTTP 400) for the new authorization in Secret 'boot' key "
        "'refresh_token': the grant held before is kept and still refreshed. To replace it, "
        f"authorize again: kubectl lucidgrant authorize g -n {NS}"
    )
    assert world.condition("ReauthorizationRequired") == ("False", "Authorized")
    assert world.condition("Ready") == ("True", "Refreshed")

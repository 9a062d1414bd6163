"""Attacks on the Secrets the operator reads and writes, performed against the real operator
process (docs/attacks-secrets.md lists them with what the operator does now)."""

from __future__ import annotations

from lucidgrant.names import SECRET_SELECTOR

from .harness import TEST_AGENT, wait_for
from .test_operator import setup_grant


def test_the_secret_watch_selects_only_labelled_secrets(kube_api, cluster, lucid, start_operator):
    """Unrelated Secrets (Helm releases can be megabytes each) are filtered by the API server:
    every list and watch of Secrets the operator makes carries the label selector."""
    api, _ = kube_api
    setup_grant(cluster, lucid)
    start_operator()
    wait_for(lambda: cluster.is_true("reporting", "Ready"), what="Ready")
    collections = [
        r
        for r in list(api.requests)
        if r.resource == "secrets" and r.verb in ("list", "watch") and r.user_agent != TEST_AGENT
    ]
    assert {r.verb for r in collections} == {"list", "watch"}
    assert {r.label_selector for r in collections} == {SECRET_SELECTOR}

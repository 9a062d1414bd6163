"""Bad LucidGrant specs: every generated spec is either refused by the emulated API server
(with the real CRD) with a 422 naming a field path, or accepted; and with the operator
running, every accepted one is reported in status within a bound, the operator stays up, and
every Secret it writes is well formed."""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant_testbed import CRDS
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.threaded import running_in_thread
from tests.chaos.world import SHORT, world
from tests.e2e.harness import CLIENT_ID, SCOPES, Cluster, wait_for

from .specs import specs

KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_names = itertools.count()


@pytest.fixture(scope="module")
def api() -> Iterator[Cluster]:
    with running_in_thread(KubeAPI([CRDS])) as (kube, _):
        yield Cluster(kube.url)


def refs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    auth = spec.get("authorization") or {}
    found = [spec.get("clientSecretRef"), spec.get("accessTokenSecret")]
    found += [auth.get("refreshTokenSecretRef"), auth.get("codeSecretRef")]
    return [r for r in found if isinstance(r, dict)]


def check_admission(cluster: Cluster, name: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    """POST the spec; a refusal must be a 422 naming a field under spec; an accepted spec must
    have lost every field the schema does not know, and the operator's own model must either
    accept it or name the bad field too. Returns the stored object if accepted."""
    response = cluster.create_grant(name, spec)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        body = response.json()
        fields = [c.get("field", "") for c in (body.get("details") or {}).get("causes") or []]
        assert any(f == "spec" or f.startswith("spec.") for f in fields), body
        assert any(f in body["message"] for f in fields), body
        return None
    stored = cluster.grant(name) or {}
    kept = stored["spec"]
    assert "unknownField" not in kept
    for ref in refs(kept):
        assert "namespace" not in ref, f"a namespace survived in a reference: {ref}"
    try:
        parsed = parse_spec(kept)
    except SpecError as exc:
        assert exc.path.startswith("spec"), exc.path
    else:
        assert isinstance(parsed, GrantSpec)
    return stored


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs())
def test_every_spec_is_refused_with_a_field_path_or_accepted(
    api: Cluster, spec: dict[str, Any]
) -> None:
    name = f"p{next(_names)}"
    if check_admission(api, name, spec) is not None:
        api.delete_grant(name)


def generated(n: int) -> list[dict[str, Any]]:
    """`n` specs drawn by Hypothesis (reproducibly), for one batch against one operator."""
    out: list[dict[str, Any]] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate])
    @given(specs())
    def collect(spec: dict[str, Any]) -> None:
        out.append(spec)

    collect()
    return out


def _b64ok(value: Any) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        return False
    return True


def _give_inputs(cluster: Cluster, lucid: Any, spec: dict[str, Any]) -> None:
    """Give the Secrets an accepted spec names something to find: a live refresh token or a
    code under the named key (the client Secret exists already, 'missing-client' never)."""
    auth = spec.get("authorization") or {}
    ref = auth.get("refreshTokenSecretRef")
    if isinstance(ref, dict) and ref.get("name") != "missing-client":
        token = lucid.issue_grant(CLIENT_ID, SCOPES)["refresh_token"]
        cluster.put_secret(ref["name"], {ref.get("key", "refresh_token"): token})
    ref = auth.get("codeSecretRef")
    if isinstance(ref, dict) and ref.get("name") != "missing-client":
        redirect = spec.get("redirectUri") or "https://ops.example.com/cb"
        code = lucid.issue_code(CLIENT_ID, redirect, SCOPES)
        cluster.put_secret(ref["name"], {ref.get("key", "code"): code})


def _reported(cluster: Cluster, names: list[str]) -> list[str]:
    """The grants whose status does not yet carry both conditions, with reasons, for the
    current generation."""
    items = cluster.http.get("/apis/lucidgrant.dev/v1alpha1/namespaces/default/lucidgrants")
    missing = []
    by_name = {g["metadata"]["name"]: g for g in items.json()["items"]}
    for name in names:
        grant = by_name[name]
        status = grant.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions") or []}
        ok = status.get("observedGeneration") == grant["metadata"]["generation"] and all(
            conds.get(t, {}).get("reason") for t in ("Ready", "ReauthorizationRequired")
        )
        if not ok:
            missing.append(name)
    return missing


def check_secrets(cluster: Cluster) -> None:
    """Every Secret in the namespace is well formed, and those the operator owns hold what
    they should: a live-looking access token and an RFC 3339 expiry, or a refresh token."""
    items = cluster.http.get("/api/v1/namespaces/default/secrets").json()["items"]
    for secret in items:
        data = secret.get("data") or {}
        meta = secret["metadata"]
        assert all(KEY.match(k) for k in data), meta["name"]
        assert all(isinstance(v, str) and _b64ok(v) for v in data.values()), meta["name"]
        values = {k: base64.b64decode(v).decode() for k, v in data.items()}
        role = (meta.get("labels") or {}).get("lucidgrant.dev/role")
        if role == "state" and "refresh_token" in values:
            assert values["refresh_token"].startswith("lrt_"), meta["name"]
        if role == "access-token":
            assert any(v.startswith("lat_") for v in values.values()), meta["name"]
            bearer = [v for v in values.values() if v.startswith("Bearer ")]
            assert all(v[7:].startswith("lat_") for v in bearer), meta["name"]
            stamps = [v for v in values.values() if re.match(r"^\d{4}-\d\d-\d\dT", v)]
            assert stamps, meta["name"]
            for stamp in stamps:
                datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")


def test_operator_reports_every_accepted_spec_and_writes_no_malformed_secret(tmp_path) -> None:
    with world(tmp_path, SHORT) as w:
        accepted: list[str] = []
        for i, spec in enumerate(generated(80)):
            stored = check_admission(w.cluster, f"s{i:03d}", spec)
            if stored is not None:
                _give_inputs(w.cluster, w.lucid, stored["spec"])
                accepted.append(f"s{i:03d}")
            if len(accepted) >= 25:
                break
        assert len(accepted) >= 10, "too few generated specs were accepted to test anything"
        proc = w.start_operator()
        wait_for(
            lambda: not _reported(w.cluster, accepted),
            timeout=45,
            interval=0.5,
            what="status for every accepted grant",
        )
        assert proc.proc.poll() is None, "the operator died"
        assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
        w.scrape(proc)
        check_secrets(w.cluster)
        w.stop(proc)
        assert "Traceback" not in proc.logs(), proc.logs()[-3000:]

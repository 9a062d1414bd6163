"""References stay inside the grant's namespace by construction, and a grant cannot make the
operator write into a Secret that another grant or another controller owns."""

from __future__ import annotations

import uuid
from typing import Any

from tests.chaos.world import SHORT, world
from tests.e2e.harness import CLIENT_ID, CLIENT_SECRET, SCOPES, grant_spec, wait_for

OTHER = "kube-public"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def test_references_to_other_namespaces_are_pruned_and_never_written(tmp_path: Any) -> None:
    with world(tmp_path, SHORT) as w:
        c = w.cluster
        # The same names exist in another namespace, with a live grant and a client.
        c.put_secret(
            "lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, OTHER
        )
        token = w.lucid.issue_grant(CLIENT_ID, SCOPES)["refresh_token"]
        c.put_secret("boot-x", {"refresh_token": token}, OTHER)
        c.put_secret("tok-x", {"access_token": "theirs"}, OTHER)
        before = c.secret_object("tok-x", OTHER) or {}
        spec = grant_spec(
            clientSecretRef={"name": "lucid-client", "namespace": OTHER},
            authorization={"refreshTokenSecretRef": {"name": "boot-x", "namespace": OTHER}},
            accessTokenSecret={"name": "tok-x", "namespace": OTHER},
        )
        assert c.create_grant("x", spec).status_code == 201
        kept = (c.grant("x") or {})["spec"]
        for ref in (
            kept["clientSecretRef"],
            kept["authorization"]["refreshTokenSecretRef"],
            kept["accessTokenSecret"],
        ):
            assert "namespace" not in ref, ref
        # And a working grant next to it, so that the operator does write something.
        w.add_grants(1, prefix="ok")
        start = len(w.kube.requests)
        w.start_operator()
        wait_for(
            lambda: (
                (c.condition("x", "ReauthorizationRequired") or {}).get("reason")
                == "AwaitingAuthorization"
            ),
            timeout=30,
            what="x reported as awaiting authorization in its own namespace",
        )
        w.wait_serving(30, "the working grant serving")
        w.stop_all()
        requests = list(w.kube.requests)[start:]
        touched = {(r.verb, r.resource, r.namespace) for r in requests if r.namespace == OTHER}
        assert not touched, f"the operator touched {OTHER}: {touched}"
        writes = {r.namespace for r in requests if r.verb in WRITES and r.resource == "secrets"}
        assert writes == {"default"}, writes
        after = c.secret_object("tok-x", OTHER) or {}
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        assert (c.secret("boot-x", OTHER) or {})["refresh_token"] == token
        assert w.lucid.grant_info(str(w.lucid.grant_of(token))).rotations == 0


def test_secrets_owned_by_another_grant_or_controller_are_refused(tmp_path: Any) -> None:
    with world(tmp_path, SHORT) as w:
        c = w.cluster
        (owner,) = w.add_grants(1, prefix="a")
        deployment_uid = str(uuid.uuid4())
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "web-config",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "web",
                        "uid": deployment_uid,
                        "controller": True,
                    }
                ],
            },
            "stringData": {"config": "kept"},
        }
        response = c.http.post("/api/v1/namespaces/default/secrets", json=body)
        assert response.status_code < 300, response.text
        w.start_operator()
        w.wait_serving(30, "the owning grant serving")
        owned_before = c.secret_object(f"tok-{owner}") or {}
        foreign_before = c.secret_object("web-config") or {}
        for name, target in (("b-grant", f"tok-{owner}"), ("c-deploy", "web-config")):
            token = w.lucid.issue_grant(CLIENT_ID, SCOPES)["refresh_token"]
            c.put_secret(f"boot-{name}", {"refresh_token": token})
            spec = grant_spec(
                authorization={"refreshTokenSecretRef": {"name": f"boot-{name}"}},
                accessTokenSecret={"name": target},
            )
            assert c.create_grant(name, spec).status_code == 201

        def conflict(name: str) -> bool:
            return (c.condition(name, "Ready") or {}).get("reason") == "SecretConflict"

        wait_for(
            lambda: conflict("b-grant") and conflict("c-deploy"),
            timeout=30,
            what="b-grant and c-deploy reported SecretConflict",
        )
        foreign_after = c.secret_object("web-config") or {}
        assert foreign_after["data"] == foreign_before["data"]
        assert (
            foreign_after["metadata"]["resourceVersion"]
            == foreign_before["metadata"]["resourceVersion"]
        )
        owned_after = c.secret_object(f"tok-{owner}") or {}
        refs = owned_after["metadata"]["ownerReferences"]
        assert [r["uid"] for r in refs] == [
            r["uid"] for r in owned_before["metadata"]["ownerReferences"]
        ]
        # The owning grant's Secret still holds its own live token, not another grant's.
        w.wait_serving(30, "the owning grant still serving")
        w.stop_all()

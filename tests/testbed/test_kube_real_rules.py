"""The real API server's rules that the emulator learned from kubernetes/kubernetes, each test
naming the source file that has the rule: list/watch failures, watch history and restarts,
RBAC and the OwnerReferencesPermissionEnforcement admission plugin, deletion propagation and
namespace deletion, object metadata validation, fieldValidation, the OpenAPI v3 documents,
Table answers, and chunked lists."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import yaml

from lucidgrant_testbed import CRDS
from lucidgrant_testbed.kube_rbac import (
    OWNER_REFERENCES_PERMISSION_ENFORCEMENT,
    User,
    service_account,
)
from lucidgrant_testbed.kube_store import History
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.threaded import running_in_thread

from .test_kubeapi import GADGET_SCHEMA, GROUP, VERSION, crd, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRETS = "/api/v1/namespaces/{ns}/secrets"
GADGETS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/gadgets"
OPERATOR = service_account("ops", "op")
LUCIDGRANTS = "/apis/lucidgrant.dev/v1alpha1/namespaces/default/lucidgrants"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def crd_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "gadgets.yaml"
    path.write_text(yaml.safe_dump(crd("gadgets", "Gadget", GADGET_SCHEMA)))
    return path


class Served:
    """An emulator in a thread, with an admin httpx client and clients for other users."""

    def __init__(self, kube: KubeAPI) -> None:
        self.kube = kube
        self.admin = httpx.Client(base_url=kube.url, timeout=10)

    def as_user(self, user: User) -> httpx.Client:
        token = self.kube.token_for(user)
        return httpx.Client(
            base_url=self.kube.url, timeout=10, headers={"Authorization": f"Bearer {token}"}
        )

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.admin.post(path, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def close(self) -> None:
        self.admin.close()


@pytest.fixture
def serve(crd_file: pathlib.Path) -> Iterator[Any]:
    running: list[Any] = []

    def start(crds: Sequence[pathlib.Path] = (), **options: Any) -> Served:
        context = running_in_thread(KubeAPI(list(crds) or [crd_file], **options))
        kube, _ = context.__enter__()
        served = Served(kube)
        running.append((context, served))
        return served

    yield start
    for context, served in running:
        served.close()
        context.__exit__(None, None, None)


def secret(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, **meta}}


def watch_lines(url: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
    with httpx.stream("GET", url, params={"watch": "true", **params}, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            yield json.loads(line)


# --- 1. list and watch failures ------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_lists_and_watches_fail_for_a_window_while_gets_succeed(serve: Any, status: int) -> None:
    """storage/cacher/cacher.go (and cacher/ready.go): while the watch cache is not ready, lists
    and watches are refused (429 `storage is (re)initializing` with retryAfterSeconds 1 on
    current servers, 503 on older ones), while a get by name is served from etcd."""
    s = serve()
    s.create(SECRETS.format(ns="default"), secret("a"))
    s.kube.faults.storage_unavailable(1.0, status=status)
    listed = s.admin.get(SECRETS.format(ns="default"))
    assert listed.status_code == status
    assert listed.json()["code"] == status
    watched = s.admin.get(SECRETS.format(ns="default"), params={"watch": "true"})
    assert watched.status_code == status
    if status == 429:
        assert listed.json()["message"] == "storage is (re)initializing"
        assert listed.json()["details"]["retryAfterSeconds"] == 1
    assert s.admin.get(SECRETS.format(ns="default") + "/a").status_code == 200
    wait_for(lambda: s.admin.get(SECRETS.format(ns="default")).status_code == 200, timeout=5)


def test_watch_error_ends_the_stream_with_an_in_stream_500(serve: Any) -> None:
    """storage/etcd3/watcher.go: an etcd failure under a watch is sent as an `ERROR` event
    carrying a Status (500 InternalError), and the stream ends."""
    s = serve()
    lines: list[dict[str, Any]] = []

    def read() -> None:
        url = s.kube.url + SECRETS.format(ns="default")
        lines.extend(watch_lines(url, {"timeoutSeconds": "10"}))

    reader = threading.Thread(target=read)
    reader.start()
    wait_for(lambda: s.kube.counts()[("watch", "secrets")] == 1)
    assert s.kube.watch_error() == 1
    reader.join(5)
    assert not reader.is_alive(), "the stream ends after the error"
    assert [e["type"] for e in lines] == ["ERROR"]
    status = lines[0]["object"]
    assert (status["code"], status["reason"]) == (500, "InternalError")
    assert status["message"].startswith("Internal error occurred: ")


# --- 4. watch history, restarts, bookmarks -------------------------------------------------


def test_restart_answers_410_to_every_resume_and_a_fresh_list_resumes(serve: Any) -> None:
    """storage/cacher/watch_cache.go: a restarted server's watch cache starts at the current
    resourceVersion; a resume from before answers 410 Gone ("too old resource version") in the
    stream, and the client must list again."""
    s = serve()
    listed = s.admin.get(SECRETS.format(ns="default")).json()
    old_rv = listed["metadata"]["resourceVersion"]
    s.create(SECRETS.format(ns="default"), secret("a"))
    s.kube.restart()
    url = s.kube.url + SECRETS.format(ns="default")
    events = list(watch_lines(url, {"resourceVersion": old_rv, "timeoutSeconds": "1"}))
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
    assert "too old resource version" in events[0]["object"]["message"]
    fresh = s.admin.get(SECRETS.format(ns="default")).json()["metadata"]["resourceVersion"]
    s.create(SECRETS.format(ns="default"), secret("b"))
    events = list(watch_lines(url, {"resourceVersion": fresh, "timeoutSeconds": "1"}))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b")]


def test_history_keeps_a_time_window_beyond_its_least_size(serve: Any) -> None:
    """storage/cacher/watch_cache.go (resizeCacheLocked, eventFreshDuration 75 s): the cache
    keeps fresh events and lets old ones go once it is full; a resume from a forgotten
    resourceVersion answers 410 Gone. Here: at least 2 events, fresh for 0.3 s."""
    s = serve(history=History(least=2, seconds=0.3))
    first = s.create(SECRETS.format(ns="default"), secret("s0"))["metadata"]["resourceVersion"]
    url = s.kube.url + SECRETS.format(ns="default")
    for i in (1, 2):
        s.create(SECRETS.format(ns="default"), secret(f"s{i}"))
    # Within the window all three events are kept, beyond the least size.
    events = list(watch_lines(url, {"resourceVersion": first, "timeoutSeconds": "0.2"}))
    assert [e["object"]["metadata"]["name"] for e in events] == ["s1", "s2"]
    count = iter(range(3, 100))

    def forgotten() -> bool:
        s.create(SECRETS.format(ns="default"), secret(f"s{next(count)}"))
        found = list(watch_lines(url, {"resourceVersion": first, "timeoutSeconds": "0.1"}))
        return bool(found[0]["type"] == "ERROR" and found[0]["object"]["code"] == 410)

    wait_for(forgotten, timeout=10)
    assert KubeAPI().store.history == History(least=100, seconds=75.0, most=102_400)


def test_bookmarks_come_once_a_minute_by_default(serve: Any) -> None:
    """storage/cacher/cacher.go (bookmarkFrequency = time.Minute): a watch asking for bookmarks
    gets one about once a minute, not every second."""
    s = serve()
    assert s.kube.bookmark_interval == 60.0
    url = s.kube.url + SECRETS.format(ns="default")
    events = list(watch_lines(url, {"allowWatchBookmarks": "true", "timeoutSeconds": "1.5"}))
    assert events == []


# --- 2. authorization and admission ----------------------------------------------------------


def rbac(kind: str, name: str, namespace: str | None = None, **rest: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta, **rest}


def binding(kind: str, name: str, role_kind: str, role: str, ns: str | None = None) -> Any:
    return rbac(
        kind,
        name,
        ns,
        roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        subjects=[{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}],
    )


def forbidden(response: httpx.Response) -> str:
    assert response.status_code == 403, response.text
    body = response.json()
    assert (body["kind"], body["status"], body["reason"]) == ("Status", "Failure", "Forbidden")
    return str(body["message"])


def test_rbac_rules_verbs_groups_subresources_names_and_namespaces(serve: Any) -> None:
    """plugin/pkg/auth/authorizer/rbac/rbac.go and pkg/apis/rbac/v1/evaluation_helpers.go:
    a Role bound in a namespace grants only there, a ClusterRole bound cluster-wide grants
    everywhere; verbs, apiGroups, resources (`<resource>/<subresource>` for a subresource,
    `*/status`) and resourceNames must all match. The 403 message is
    endpoints/handlers/responsewriters/errors.go's, wrapped by apierrors.NewForbidden."""
    s = serve()
    s.kube.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
            rbac(
                "Role",
                "r",
                "team",
                rules=[
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "resourceNames": ["named"],
                        "verbs": ["patch"],
                    },
                ],
            ),
            binding("RoleBinding", "rb", "Role", "r", "team"),
            rbac(
                "ClusterRole",
                "cr",
                rules=[{"apiGroups": [GROUP], "resources": ["*/status"], "verbs": ["patch"]}],
            ),
            binding("ClusterRoleBinding", "crb", "ClusterRole", "cr"),
            binding("ClusterRoleBinding", "dangling", "ClusterRole", "missing"),
        ]
    )
    for ns in ("team", "default"):
        s.create(SECRETS.format(ns=ns), secret("named"))
        s.create(GADGETS.format(ns=ns), {"metadata": {"name": "g"}, "spec": {}})
    op = s.as_user(OPERATOR)
    user = 'User "system:serviceaccount:ops:op"'
    assert op.get(SECRETS.format(ns="team") + "/named").status_code == 200
    assert op.get(SECRETS.format(ns="team")).status_code == 200
    assert forbidden(op.get(SECRETS.format(ns="default"))) == (
        f'secrets is forbidden: {user} cannot list resource "secrets" in API group "" in the '
        'namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found'
    )
    assert forbidden(op.get("/api/v1/secrets")).startswith(
        f'secrets is forbidden: {user} cannot list resource "secrets" in API group "" at the '
        "cluster scope"
    )
    merge = {"Content-Type": "application/merge-patch+json"}
    patch = {"metadata": {"labels": {"a": "b"}}}
    assert op.patch(SECRETS.format(ns="team") + "/named", json=patch, headers=merge).is_success
    s.create(SECRETS.format(ns="team"), secret("other"))
    denied = op.patch(SECRETS.format(ns="team") + "/other", json=patch, headers=merge)
    assert forbidden(denied).startswith(
        f'secrets "other" is forbidden: {user} cannot patch resource "secrets" in API group ""'
    )
    assert forbidden(op.post(SECRETS.format(ns="team"), json=secret("new")))
    status = {"status": {"seen": True}}
    gadget = GADGETS.format(ns="default") + "/g"
    assert op.patch(gadget + "/status", json=status, headers=merge).is_success
    assert forbidden(op.patch(gadget, json=patch, headers=merge)) == (
        f'gadgets.{GROUP} "g" is forbidden: {user} cannot patch resource "gadgets" in API group '
        f'"{GROUP}" in the namespace "default": RBAC: clusterrole.rbac.authorization.k8s.io '
        '"missing" not found'
    )
    # Discovery is open to every authenticated user (bootstrappolicy/policy.go).
    assert op.get("/api/v1").status_code == 200
    assert op.get("/version").status_code == 200
    # An unknown token is not a user at all.
    stranger = httpx.get(s.kube.url + "/api/v1", headers={"Authorization": "Bearer nope"})
    assert (stranger.status_code, stranger.json()["reason"]) == (401, "Unauthorized")
    ops = [r for r in s.kube.requests if r.user == OPERATOR.name]
    assert {r.code for r in ops} == {200, 403}


def test_deployed_rbac_manifests_are_what_the_operator_may_do(serve: Any) -> None:
    """deploy/base/rbac.yaml loaded as manifests and enforced for the operator's
    ServiceAccount: a Role grants in its namespace only, the ClusterRole everywhere, and no
    verb beyond the rules (plugin/pkg/auth/authorizer/rbac/rbac.go)."""
    s = serve(
        manifests=[ROOT / "deploy/base/namespace.yaml", ROOT / "deploy/base/rbac.yaml"],
    )
    op = s.as_user(service_account("lucidgrant-system", "lucidgrant"))
    leases = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    body = {"metadata": {"name": "lucidgrant-leader"}, "spec": {"holderIdentity": "x"}}
    assert op.post(leases.format(ns="lucidgrant-system"), json=body).status_code == 201
    assert op.get(leases.format(ns="lucidgrant-system") + "/lucidgrant-leader").is_success
    message = forbidden(op.post(leases.format(ns="default"), json=body))
    assert 'cannot create resource "leases" in API group "coordination.k8s.io"' in message
    assert op.get(SECRETS.format(ns="default")).status_code == 200
    assert forbidden(op.put(SECRETS.format(ns="default") + "/x", json=secret("x")))
    # Allowed by the ClusterRole; not served here (no CRD loaded).
    grants = "/apis/lucidgrant.dev/v1alpha1/namespaces/default/lucidgrants"
    assert op.get(grants).status_code == 404


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(serve: Any) -> None:
    """plugin/pkg/admission/gc/gc_admission.go (OwnerReferencesPermissionEnforcement, off in
    kube-apiserver by default, on in OpenShift): setting `blockOwnerDeletion: true` needs
    `update` on `<owner resource>/finalizers`; changing ownerReferences on an update needs
    `delete` on the object itself."""
    s = serve(admission=[OWNER_REFERENCES_PERMISSION_ENFORCEMENT])
    s.kube.apply(
        [
            rbac(
                "ClusterRole",
                "writer",
                rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]}],
            ),
            binding("ClusterRoleBinding", "writer", "ClusterRole", "writer"),
        ]
    )
    owner = s.create(GADGETS.format(ns="default"), {"metadata": {"name": "g"}, "spec": {}})
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gadget",
        "name": "g",
        "uid": owner["metadata"]["uid"],
    }
    op = s.as_user(OPERATOR)
    plain = secret("plain", ownerReferences=[ref])
    assert op.post(SECRETS.format(ns="default"), json=plain).status_code == 201
    blocking = secret("blocking", ownerReferences=[{**ref, "blockOwnerDeletion": True}])
    assert forbidden(op.post(SECRETS.format(ns="default"), json=blocking)) == (
        'secrets "blocking" is forbidden: cannot set blockOwnerDeletion if an ownerReference '
        "refers to a resource you can't set finalizers on: , <nil>"
    )
    merge = {"Content-Type": "application/merge-patch+json"}
    unowned = {"metadata": {"ownerReferences": None}}
    assert forbidden(
        op.patch(SECRETS.format(ns="default") + "/plain", json=unowned, headers=merge)
    ).endswith("cannot set an ownerRef on a resource you can't delete: , <nil>")
    s.kube.apply(
        [
            rbac(
                "Role",
                "finalizer",
                "default",
                rules=[
                    {"apiGroups": [GROUP], "resources": ["gadgets/finalizers"], "verbs": ["update"]}
                ],
            ),
            binding("RoleBinding", "finalizer", "Role", "finalizer", "default"),
        ]
    )
    assert op.post(SECRETS.format(ns="default"), json=blocking).status_code == 201
    # Without the plugin (kube-apiserver's default) the same create is admitted.
    bare = serve()
    bare.kube.apply(
        [
            rbac(
                "ClusterRole",
                "writer",
                rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}],
            ),
            binding("ClusterRoleBinding", "writer", "ClusterRole", "writer"),
        ]
    )
    owner = bare.create(GADGETS.format(ns="default"), {"metadata": {"name": "g"}, "spec": {}})
    ref["uid"] = owner["metadata"]["uid"]
    blocking = secret("blocking", ownerReferences=[{**ref, "blockOwnerDeletion": True}])
    assert bare.as_user(OPERATOR).post(SECRETS.format(ns="default"), json=blocking).is_success


# --- 3. deletion propagation ----------------------------------------------------------------


def owned(name: str, owner: dict[str, Any], *, block: bool, **meta: Any) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": block,
    }
    return secret(name, ownerReferences=[ref], **meta)


def test_foreground_deletion_removes_dependents_before_the_owner(serve: Any) -> None:
    """apiserver/pkg/registry/generic/registry/store.go (deletionFinalizersForGarbageCollection)
    adds `foregroundDeletion` for propagationPolicy=Foreground; the garbage collector
    (pkg/controller/garbagecollector/garbagecollector.go) deletes the dependents and removes
    the finalizer once no dependent with `blockOwnerDeletion: true` is left."""
    s = serve()
    gadgets = GADGETS.format(ns="default")
    owner = s.create(gadgets, {"metadata": {"name": "g", "finalizers": ["test/hold"]}, "spec": {}})
    s.create(SECRETS.format(ns="default"), owned("blocker", owner, block=True, finalizers=["t/k"]))
    s.create(SECRETS.format(ns="default"), owned("free", owner, block=False))
    deleted = s.admin.delete(f"{gadgets}/g", params={"propagationPolicy": "Foreground"})
    assert deleted.status_code == 200
    assert deleted.json()["metadata"]["finalizers"] == ["test/hold", "foregroundDeletion"]
    wait_for(lambda: s.admin.get(SECRETS.format(ns="default") + "/free").status_code == 404)
    blocker = s.admin.get(SECRETS.format(ns="default") + "/blocker").json()
    assert blocker["metadata"]["deletionTimestamp"]
    # The owner waits for the blocking dependent, with its own finalizer still on it.
    assert s.admin.get(f"{gadgets}/g").json()["metadata"]["finalizers"] == [
        "test/hold",
        "foregroundDeletion",
    ]
    merge = {"Content-Type": "application/merge-patch+json"}
    unhold = {"metadata": {"finalizers": None}}
    s.admin.patch(SECRETS.format(ns="default") + "/blocker", json=unhold, headers=merge)

    def waiting_on_own_finalizer() -> bool:
        meta = s.admin.get(f"{gadgets}/g").json()["metadata"]
        return bool(meta["finalizers"] == ["test/hold"])

    wait_for(waiting_on_own_finalizer)
    s.admin.patch(f"{gadgets}/g", json=unhold, headers=merge)
    assert s.admin.get(f"{gadgets}/g").status_code == 404


def test_orphan_deletion_keeps_dependents_without_the_owner(serve: Any) -> None:
    """registry/store.go adds `orphan` for propagationPolicy=Orphan; the garbage collector
    removes the owner from the dependents' ownerReferences, then the finalizer. An unknown
    policy is refused (apis/meta/v1/validation/validation.go, ValidateDeleteOptions)."""
    s = serve()
    gadgets = GADGETS.format(ns="default")
    owner = s.create(gadgets, {"metadata": {"name": "g"}, "spec": {}})
    s.create(SECRETS.format(ns="default"), owned("kept", owner, block=True))
    refused = s.admin.delete(f"{gadgets}/g", params={"propagationPolicy": "Sideways"})
    assert refused.status_code == 422
    assert s.admin.delete(f"{gadgets}/g", params={"propagationPolicy": "Orphan"}).is_success
    wait_for(lambda: s.admin.get(f"{gadgets}/g").status_code == 404)
    kept = s.admin.get(SECRETS.format(ns="default") + "/kept").json()
    assert "ownerReferences" not in kept["metadata"]


def test_namespace_deletion_deletes_secrets_without_waiting_for_finalizers(serve: Any) -> None:
    """pkg/controller/namespace/deletion/namespaced_resources_deleter.go: the namespace
    controller deletes every object in the namespace; objects without finalizers (Secrets) go
    at once, objects with finalizers get a deletionTimestamp and the namespace waits for them."""
    s = serve()
    s.create("/api/v1/namespaces", {"metadata": {"name": "team"}})
    gadgets = GADGETS.format(ns="team")
    owner = s.create(gadgets, {"metadata": {"name": "g", "finalizers": ["test/hold"]}, "spec": {}})
    s.create(SECRETS.format(ns="team"), owned("state", owner, block=True))
    assert s.admin.delete("/api/v1/namespaces/team").is_success
    wait_for(lambda: s.admin.get(SECRETS.format(ns="team") + "/state").status_code == 404)
    waiting = s.admin.get(f"{gadgets}/g").json()
    assert waiting["metadata"]["deletionTimestamp"]
    assert s.admin.get("/api/v1/namespaces/team").json()["status"]["phase"] == "Terminating"
    merge = {"Content-Type": "application/merge-patch+json"}
    s.admin.patch(f"{gadgets}/g", json={"metadata": {"finalizers": None}}, headers=merge)
    wait_for(lambda: s.admin.get("/api/v1/namespaces/team").status_code == 404)


# --- 5. object metadata validation ----------------------------------------------------------


def invalid(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["reason"] == "Invalid"
    return [(c["field"], c["message"]) for c in body["details"]["causes"]]


LONG = "a" * 64


def test_labels_annotations_and_names_are_validated_with_the_servers_paths(serve: Any) -> None:
    """apimachinery/pkg/api/validation/objectmeta.go (ValidateObjectMetaAccessor,
    ValidateAnnotations: qualified-name keys, 256 KiB in total), apis/meta/v1/validation/
    validation.go (ValidateLabels: keys qualified names, values ≤ 63 characters of
    [-A-Za-z0-9_.] starting and ending alphanumeric), api/validate/content/kube.go and
    util/validation/validation.go (the messages); Secrets and custom resources are named as
    DNS subdomains (≤ 253 characters)."""
    s = serve()
    path = SECRETS.format(ns="default")
    causes = invalid(s.admin.post(path, json=secret("a", labels={"grant": LONG})))
    assert causes == [
        ("metadata.labels", f'Invalid value: "{LONG}": must be no more than 63 characters')
    ]
    causes = invalid(s.admin.post(path, json=secret("a", labels={"bad key!": "-x"})))
    assert [c[0] for c in causes] == ["metadata.labels", "metadata.labels"]
    assert causes[0][1].startswith('Invalid value: "bad key!": name part must consist of ')
    assert causes[1][1].startswith('Invalid value: "-x": a valid label must be an empty string ')
    causes = invalid(s.admin.post(path, json=secret("a", annotations={"a/b/c": "x"})))
    assert causes[0][0] == "metadata.annotations"
    assert causes[0][1].startswith('Invalid value: "a/b/c": a valid label key must consist of')
    big = {"a": "x" * (256 * 1024)}
    assert invalid(s.admin.post(path, json=secret("a", annotations=big))) == [
        ("metadata.annotations", "Too long: must have at most 262144 bytes")
    ]
    assert s.admin.post(path, json=secret("a", labels={"ok.example/k": "v" * 63})).is_success
    merge = {"Content-Type": "application/merge-patch+json"}
    patched = s.admin.patch(f"{path}/a", json={"metadata": {"labels": {"x": LONG}}}, headers=merge)
    assert invalid(patched)[0][0] == "metadata.labels"
    causes = invalid(s.admin.post(path, json=secret("Bad_Name")))
    assert causes == [
        (
            "metadata.name",
            'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    ]
    long_name = "g" * 254
    causes = invalid(
        s.admin.post(GADGETS.format(ns="default"), json={"metadata": {"name": long_name}})
    )
    assert causes[0] == (
        "metadata.name",
        f'Invalid value: "{long_name}": must be no more than 253 characters',
    )
    assert s.admin.post(
        GADGETS.format(ns="default"), json={"metadata": {"name": "g" * 253}, "spec": {}}
    ).is_success


def test_secret_data_keys_follow_the_config_key_rule(serve: Any) -> None:
    """pkg/apis/core/validation/validation.go (ValidateSecret) with util/validation/
    validation.go IsConfigMapKey: keys of [-._a-zA-Z0-9]+, at most 253 characters, not `.`,
    `..` nor starting with `..`; the field is `data[<key>]`."""
    s = serve()
    path = SECRETS.format(ns="default")
    for key, message in [
        ("..", "must not be '..'"),
        ("..x", "must not start with '..'"),
        ("k" * 254, "must be no more than 253 characters"),
        ("a b", "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
    ]:
        body = {**secret("s"), "stringData": {key: "v"}}
        causes = invalid(s.admin.post(path, json=body))
        assert causes[0][0] == f"data[{key}]"
        assert causes[0][1].startswith(f'Invalid value: "{key}": {message}')
    assert s.admin.post(path, json={**secret("s"), "stringData": {"k" * 253: "v"}}).is_success


# --- 6. fieldValidation --------------------------------------------------------------------


def lucidgrant(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lucidgrant.dev/v1alpha1",
        "kind": "LucidGrant",
        "metadata": {"name": name},
        "spec": {
            "clientSecretRef": {"name": "client"},
            "scopes": ["offline_access"],
            "accessTokenSecret": {"name": "token"},
            **spec,
        },
    }


def test_field_validation_strict_warn_and_ignore(serve: Any) -> None:
    """apiserver/pkg/endpoints/handlers/create.go and update.go: under `fieldValidation=Strict`
    (kubectl's default) unknown fields answer 400 "<Kind> in version ... cannot be handled as a
    <Kind>: strict decoding error: unknown field ..."; handlers/patch.go: a patch answers 422
    on `patch`; Warn, the default when the parameter is absent (handlers/rest.go,
    fieldValidation), sends a `Warning: 299 - ...` header per field and prunes; Ignore prunes
    silently. The unknown fields are those the schema prunes, sorted, with their paths
    (apiextensions-apiserver/pkg/apiserver/customresource_handler.go, schemaCoercingDecoder;
    schema/pruning/algorithm.go). Any other value answers 422 (apimachinery/pkg/apis/meta/v1/
    validation/validation.go)."""
    s = serve(crds=[CRDS])
    strict = {"fieldValidation": "Strict"}
    refused = s.admin.post(LUCIDGRANTS, params=strict, json=lucidgrant("a", x=1, y={"z": 2}))
    assert refused.status_code == 400
    assert refused.json()["reason"] == "BadRequest"
    assert refused.json()["message"] == (
        'LucidGrant in version "v1alpha1" cannot be handled as a LucidGrant: strict decoding '
        'error: unknown field "spec.x", unknown field "spec.y"'
    )
    warned = s.admin.post(LUCIDGRANTS, json=lucidgrant("a", x=1))
    assert warned.status_code == 201
    assert warned.headers.get_list("Warning") == ['299 - "unknown field \\"spec.x\\""']
    assert "x" not in warned.json()["spec"]
    ignored = s.admin.post(
        LUCIDGRANTS, params={"fieldValidation": "Ignore"}, json=lucidgrant("b", x=1)
    )
    assert ignored.status_code == 201
    assert "Warning" not in ignored.headers
    assert "x" not in ignored.json()["spec"]

    body = warned.json()
    body["spec"]["clientSecretRef"]["extra"] = "e"
    put = s.admin.put(f"{LUCIDGRANTS}/a", params=strict, json=body)
    assert put.status_code == 400
    assert put.json()["message"].endswith(
        'strict decoding error: unknown field "spec.clientSecretRef.extra"'
    )
    patch = {"spec": {"x": 1}}
    patched = s.admin.patch(f"{LUCIDGRANTS}/a", params=strict, json=patch, headers=MERGE)
    assert patched.status_code == 422
    [cause] = patched.json()["details"]["causes"]
    assert cause["field"] == "patch"
    assert cause["message"].startswith('Invalid value: "{')
    assert cause["message"].endswith('": strict decoding error: unknown field "spec.x"')
    assert patched.json()["message"].startswith(' "" is invalid: patch: Invalid value: ')
    status = s.admin.patch(f"{LUCIDGRANTS}/a/status", json={"status": {"y": 1}}, headers=MERGE)
    assert status.status_code == 200
    assert status.headers.get_list("Warning") == ['299 - "unknown field \\"status.y\\""']

    unknown = s.admin.post(LUCIDGRANTS, params={"fieldValidation": "strict"}, json=lucidgrant("c"))
    assert unknown.status_code == 422
    assert unknown.json()["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
        '"strict": supported values: "Ignore", "Strict", "Warn"'
    )


# --- 7. chunked lists --------------------------------------------------------------------


def test_chunked_lists_continue_tokens_and_compaction(serve: Any) -> None:
    """apiserver/pkg/storage/etcd3/store.go (GetList): `limit` cuts a list into chunks, each with
    a `continue` token (storage/continue.go: base64 of {"v", "rv", "start"}) while more are
    left, `remainingItemCount` only when no selector filters; the chunks keep the first one's
    resourceVersion. A token it cannot read answers 400; once etcd compacted the token's
    resourceVersion (storage/etcd3/compact.go, every 5 minutes) it answers 410 Expired with a
    token that goes on at the latest state (etcd3/errors.go, handleCompactedErrorForPaging)."""
    s = serve()
    path = SECRETS.format(ns="default")
    for i in range(5):
        s.create(path, secret(f"s{i}", labels={"odd": str(i % 2)}))
    first = s.admin.get(path, params={"limit": "2"}).json()
    assert [i["metadata"]["name"] for i in first["items"]] == ["s0", "s1"]
    assert first["metadata"]["remainingItemCount"] == 3
    token = first["metadata"]["continue"]
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert decoded == {"v": "meta.k8s.io/v1", "rv": int(first["metadata"]["resourceVersion"]),
                       "start": "s1\x00"}  # fmt: skip
    s.create(path, secret("s5"))
    rest = s.admin.get(path, params={"limit": "10", "continue": token}).json()
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert "continue" not in rest["metadata"]
    assert [i["metadata"]["name"] for i in rest["items"]][:3] == ["s2", "s3", "s4"]

    selected = s.admin.get(path, params={"limit": "1", "labelSelector": "odd=1"}).json()
    assert [i["metadata"]["name"] for i in selected["items"]] == ["s1"]
    assert "remainingItemCount" not in selected["metadata"]
    across = s.admin.get("/api/v1/secrets", params={"limit": "1"}).json()
    across_token = across["metadata"]["continue"]
    start = json.loads(base64.urlsafe_b64decode(across_token + "==="))["start"]
    assert start == "default/s0\x00"

    bad = s.admin.get(path, params={"limit": "2", "continue": "not-a-token"})
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("invalid continue token: continue key is not valid")
    s.kube.compact()
    expired = s.admin.get(path, params={"limit": "2", "continue": token})
    assert expired.status_code == 410
    assert expired.json()["reason"] == "Expired"
    assert expired.json()["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result."
    )
    onward = expired.json()["metadata"]["continue"]
    latest = s.admin.get(path, params={"limit": "10", "continue": onward}).json()
    assert [i["metadata"]["name"] for i in latest["items"]] == ["s2", "s3", "s4", "s5"]


# --- 8. Table answers ------------------------------------------------------------------------

TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def test_tables_render_printer_columns_and_default_ones(serve: Any, crd_file: pathlib.Path) -> None:
    """apiextensions-apiserver/pkg/registry/customresource/tableconvertor/tableconvertor.go:
    Name, then the CRD's additionalPrinterColumns (the first JSONPath result; a string column
    printed, a date column as the time since); pkg/apiserver/helpers.go: an Age column when the
    CRD has none; apiserver/pkg/registry/rest/table.go: built-in kinds without a printer get
    Name and Created At; apiserver/pkg/endpoints/handlers/response.go (asTable): each row's
    object is a PartialObjectMetadata unless `includeObject` says Object or None;
    apimachinery/pkg/util/duration/duration.go: a date in the future prints `<invalid>`."""
    s = serve(crds=[CRDS, crd_file])
    s.create(LUCIDGRANTS, lucidgrant("a"))
    status = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Refreshed", "message": "ok",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ReauthorizationRequired", "status": "False", "reason": "Refreshed",
             "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ],
        "accessTokenExpiresAt": "2099-01-01T00:00:00Z",
        "refreshTokenExpiresAt": "2099-06-01T00:00:00Z",
    }  # fmt: skip
    patched = s.admin.patch(f"{LUCIDGRANTS}/a/status", json={"status": status}, headers=MERGE)
    assert patched.status_code == 200, patched.text
    table = s.admin.get(LUCIDGRANTS, headers=TABLE).json()
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Ready", "Reason", "Reauth", "Access-Expires", "Refresh-Expires",
                     "Age"]  # fmt: skip
    [row] = table["rows"]
    assert row["cells"][:6] == ["a", "True", "Refreshed", "False", "2099-01-01T00:00:00Z",
                                "2099-06-01T00:00:00Z"]  # fmt: skip
    assert row["cells"][6] != "<invalid>" and row["cells"][6].endswith("s")
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "a"
    one = s.admin.get(f"{LUCIDGRANTS}/a", headers=TABLE, params={"includeObject": "Object"})
    assert one.json()["rows"][0]["object"]["spec"]["scopes"] == ["offline_access"]
    bare = s.admin.get(LUCIDGRANTS, headers=TABLE, params={"includeObject": "None"}).json()
    assert "object" not in bare["rows"][0]

    # The CRD has no date column but Age: an expiry as a date would print <invalid>.
    crd = yaml.safe_load((CRDS / "lucidgrant.dev_lucidgrants.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    dated = [c["jsonPath"] for c in columns if c["type"] == "date"]
    assert dated == [".metadata.creationTimestamp"]
    gizmo = crd_with_columns(
        "gizmos", "Gizmo", [{"name": "Expires", "type": "date", "jsonPath": ".status.expires"}]
    )
    assert s.admin.post(CRD_PATH, json=gizmo).status_code == 201
    gizmos = f"/apis/{GROUP}/{VERSION}/namespaces/default/gizmos"
    s.create(gizmos, {"metadata": {"name": "g"}, "spec": {}})
    future = {"status": {"expires": "2099-01-01T00:00:00Z"}}
    assert s.admin.patch(f"{gizmos}/g/status", json=future, headers=MERGE).is_success
    assert s.admin.get(gizmos, headers=TABLE).json()["rows"][0]["cells"] == ["g", "<invalid>"]

    gadgets = s.admin.get(GADGETS.format(ns="default"), headers=TABLE).json()
    assert [c["name"] for c in gadgets["columnDefinitions"]] == ["Name", "Age"]
    s.create(SECRETS.format(ns="default"), secret("s"))
    secrets = s.admin.get(SECRETS.format(ns="default"), headers=TABLE).json()
    assert [c["name"] for c in secrets["columnDefinitions"]] == ["Name", "Created At"]
    assert secrets["rows"][0]["cells"][0] == "s"
    assert s.admin.get(SECRETS.format(ns="default")).json()["kind"] == "SecretList"


METADATA = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"}


def test_a_get_as_partial_object_metadata_answers_the_metadata_alone(serve: Any) -> None:
    """apiserver/pkg/endpoints/handlers/response.go (asPartialObjectMetadata): a get with
    `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1` answers the object's
    metadata only, as kind PartialObjectMetadata of meta.k8s.io/v1 (v1beta1 when asked); a list
    asked so is refused 406 NotAcceptable (PartialObjectMetadataList is what a list takes)."""
    s = serve()
    path = SECRETS.format(ns="default")
    body = {**secret("pw", labels={"app": "db"}), "data": {"password": "c2VjcmV0"}}
    assert s.admin.post(path, json=body).status_code == 201
    got = s.admin.get(f"{path}/pw", headers=METADATA)
    assert got.status_code == 200, got.text
    answer = got.json()
    assert (answer["kind"], answer["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1")
    assert answer["metadata"]["labels"] == {"app": "db"}
    assert set(answer) == {"kind", "apiVersion", "metadata"}, "no data, no type"
    beta = {"Accept": METADATA["Accept"].replace("v=v1", "v=v1beta1")}
    assert s.admin.get(f"{path}/pw", headers=beta).json()["apiVersion"] == "meta.k8s.io/v1beta1"
    listed = s.admin.get(path, headers=METADATA)
    assert (listed.status_code, listed.json()["reason"]) == (406, "NotAcceptable")
    assert "data" in s.admin.get(f"{path}/pw").json(), "without the header, the whole object"


def crd_with_columns(plural: str, kind: str, columns: list[dict[str, Any]]) -> dict[str, Any]:
    body = crd(plural, kind, GADGET_SCHEMA)
    body["spec"]["versions"][0]["additionalPrinterColumns"] = columns
    return body


# --- 9. OpenAPI v3 -----------------------------------------------------------------------------


def test_openapi_v3_serves_the_crd_schemas_for_kubectl(serve: Any) -> None:
    """vendor/k8s.io/kube-openapi/pkg/handler3/handler.go: `/openapi/v3` lists a
    serverRelativeURL per group version; apiextensions-apiserver/pkg/controller/openapi/builder/
    builder.go: the CRD's schema as a component named by the reversed group, with
    x-kubernetes-group-version-kind and metadata a reference to ObjectMeta, and the resource's
    paths; cli-runtime/pkg/resource/query_param_verifier_v3.go: kubectl sends
    fieldValidation=Strict when the kind's PATCH declares the parameter."""
    s = serve(crds=[CRDS])
    paths = s.admin.get("/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/lucidgrant.dev/v1alpha1"} <= set(paths)
    url = paths["apis/lucidgrant.dev/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/lucidgrant.dev/v1alpha1?hash=")
    doc = s.admin.get(url).json()
    schemas = doc["components"]["schemas"]
    schema = schemas["dev.lucidgrant.v1alpha1.LucidGrant"]
    gvk = {"group": "lucidgrant.dev", "version": "v1alpha1", "kind": "LucidGrant"}
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    crd = yaml.safe_load((CRDS / "lucidgrant.dev_lucidgrants.yaml").read_text())
    declared = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"] == declared["properties"]["spec"]
    meta_ref = schema["properties"]["metadata"]["allOf"][0]["$ref"]
    assert meta_ref == "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and all(ref in schemas for ref in refs)
    item = "/apis/lucidgrant.dev/v1alpha1/namespaces/{namespace}/lucidgrants/{name}"
    patch = doc["paths"][item]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == gvk
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert f"{item}/status" in doc["paths"]
    core = s.admin.get(paths["api/v1"]["serverRelativeURL"]).json()
    assert "io.k8s.api.core.v1.Secret" in core["components"]["schemas"]
    assert s.admin.get("/openapi/v3/apis/nothing.example/v1").status_code == 404

"""The emulated Kubernetes API, exercised through the real `kubernetes` client (and kopf)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client import ApiClient, ApiException

from lucidgrant_testbed.kube_cel import CelSyntaxError, compile_rule
from lucidgrant_testbed.kube_store import History
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.threaded import ServiceThread, running_in_thread

GROUP, VERSION = "test.lucidgrant.dev", "v1"
HERE = pathlib.Path(__file__).parent

WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "x-kubernetes-validations": [
                {"rule": "has(self.a) != has(self.b)", "message": "exactly one of a or b"},
                {"rule": "!has(self.name) || size(self.name) > 2", "message": "name too short"},
                {"rule": "self.totally.unsupported.macro.all(x, x > 0)"},
            ],
            "properties": {
                "size": {"type": "integer", "minimum": 1, "maximum": 10},
                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "a": {"type": "string"},
                "b": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "nested": {
                    "type": "object",
                    "properties": {"level": {"type": "string", "default": "info"}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "phase": {"type": "string", "enum": ["Ready", "Failed"]},
                "count": {"type": "integer"},
            },
        },
    },
}


def crd(plural: str, kind: str, schema: dict[str, Any], status: bool = True) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "shortNames": [kind.lower()[:2]],
            },
            "versions": [version],
        },
    }


GADGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


@pytest.fixture
def crd_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "crds"
    directory.mkdir()
    (directory / "widgets.yaml").write_text(yaml.safe_dump(crd("widgets", "Widget", WIDGET_SCHEMA)))
    (directory / "gadgets.yaml").write_text(
        "# two documents in one file, one of them not a CRD\n---\n"
        + yaml.safe_dump(crd("gadgets", "Gadget", GADGET_SCHEMA))
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n"
    )
    return directory


@pytest.fixture
def served(crd_dir: pathlib.Path) -> Iterator[tuple[KubeAPI, ServiceThread]]:
    with running_in_thread(KubeAPI([crd_dir], bookmark_interval=0.2)) as pair:
        yield pair


@pytest.fixture
def kube(served: tuple[KubeAPI, ServiceThread]) -> KubeAPI:
    return served[0]


@pytest.fixture
def api(kube: KubeAPI, tmp_path: pathlib.Path) -> Iterator[Any]:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    api_client = new_client(str(path))
    yield api_client
    api_client.close()


@pytest.fixture
def core(api: ApiClient) -> Any:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: ApiClient) -> Any:
    return client.CustomObjectsApi(api)


def new_client(config_file: str) -> Any:
    """An ApiClient from a kubeconfig, exactly as an operator would build one."""
    new: Any = config.new_client_from_config  # untyped in the kubernetes package
    return new(config_file=config_file)


def watch_stream(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    watcher: Any = watch.Watch()
    stream: Iterator[dict[str, Any]] = watcher.stream(fn, *args, **kwargs)
    return stream


def status_of(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    assert exc.value.body is not None
    body: dict[str, Any] = json.loads(exc.value.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == exc.value.status
    return body


def widget(name: str, /, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": 1, "a": "x", **spec},
    }


def create_widget(custom: Any, name: str, /, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", widget(name, **spec)
    )
    return obj


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


def collect(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """Run a watch to its server-side timeout; the (type, name) of every event."""
    events = watch_stream(fn, *args, **kwargs)
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


class Background:
    """A watch running in a thread, its events collected as they come."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.events: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for e in watch_stream(fn, *args, **kwargs):
                self.events.append((e["type"], e["raw_object"]["metadata"].get("name", "")))
        except BaseException as e:
            self.error = e

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("has(self.a) != has(self.b)", {"a": 1}, True),
        ("has(self.a) != has(self.b)", {"a": 1, "b": 2}, False),
        ("has(self.x.y)", {"x": {"y": None}}, True),
        ("!has(self.x)", {"x": 1}, False),
        ("self.x == 'lit'", {"x": "lit"}, True),
        ('self.x != "lit"', {"x": "lit"}, False),
        ("has(self.x) && self.x == 'a' || !has(self.x)", {}, True),
        ("has(self.x) && (self.x == 'a' || self.x == 'b')", {"x": "c"}, False),
        ("size(self.x) > 0", {"x": []}, False),
        ("self.x.size() >= 2 && self.n <= 3", {"x": "ab", "n": 3}, True),
        # CEL's matches() is a search, as RE2's PartialMatch (cel-spec, doc/langdef.md).
        ("self.matches('[1-9]')", "0m30s", True),
        ("self.matches('[1-9]')", "0s", False),
        ("self.matches('^a$')", "ab", False),
    ],
)
def test_cel_subset(rule: str, value: Any, expected: bool) -> None:
    assert compile_rule(rule)(value) is expected


def test_every_rule_of_our_crds_is_emulated() -> None:
    """A rule outside the subset would be skipped: the emulator would admit what the real
    server refuses."""

    def rules(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or ():
                yield rule["rule"]
            for child in node.values():
                yield from rules(child)
        elif isinstance(node, list):
            for child in node:
                yield from rules(child)

    crds = pathlib.Path(__file__).resolve().parents[2] / "crds"
    found = [
        r for path in sorted(crds.glob("*.yaml")) for r in rules(yaml.safe_load(path.read_text()))
    ]
    assert len(found) >= 3
    for rule in found:
        compile_rule(rule)


def test_cel_outside_the_subset_does_not_compile() -> None:
    for rule in ("self.all(x, x > 0)", "self.x in ['a']", "self.x + 1 > 2", "oldSelf == self"):
        with pytest.raises(CelSyntaxError):
            compile_rule(rule)


# --- discovery and paths ---------------------------------------------------------------------


def test_discovery(api: ApiClient, kube: KubeAPI) -> None:
    version = client.VersionApi(api).get_code()
    assert version.major == "1"
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]

    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"secrets", "events", "namespaces", "configmaps", "namespaces/status"} <= set(
        core_resources
    )
    assert core_resources["secrets"].namespaced is True
    assert core_resources["secrets"].kind == "Secret"
    assert core_resources["secrets"].singular_name == "secret"
    assert core_resources["namespaces"].namespaced is False
    assert "watch" in core_resources["secrets"].verbs

    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    assert {"apiextensions.k8s.io", "coordination.k8s.io", GROUP} <= set(groups)
    preferred = groups[GROUP].preferred_version
    assert preferred is not None
    assert preferred.group_version == f"{GROUP}/{VERSION}"

    resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources
    by_name = {r.name: r for r in resources}
    assert set(by_name) == {"widgets", "widgets/status", "gadgets", "gadgets/status"}
    assert by_name["widgets"].kind == "Widget"
    assert by_name["widgets"].short_names == ["wi"]
    assert by_name["widgets"].singular_name == "widget"
    coordination: Any = client.CoordinationApi(api)
    assert coordination.get_api_group().preferred_version.version == "v1"
    leases = client.CoordinationV1Api(api).get_api_resources().resources
    assert [r.name for r in leases] == ["leases"]


def test_crd_posted_at_runtime_is_served_and_deletion_removes_it(api: ApiClient) -> None:
    ext: Any = client.ApiextensionsV1Api(api)
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    created = ext.create_custom_resource_definition(crd("doohickeys", "Doohickey", schema, False))
    assert created.status.accepted_names.kind == "Doohickey"
    custom: Any = client.CustomObjectsApi(api)
    names = {r.name for r in custom.get_api_resources(GROUP, VERSION).resources}
    assert "doohickeys" in names and "doohickeys/status" not in names
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", "doohickeys", {"metadata": {"name": "d"}, "spec": {"x": 1}}
    )

    ext.delete_custom_resource_definition(f"doohickeys.{GROUP}")
    names = {r.name for r in custom.get_api_resources(GROUP, VERSION).resources}
    assert "doohickeys" not in names
    with pytest.raises(ApiException) as exc:
        custom.list_namespaced_custom_object(GROUP, VERSION, "default", "doohickeys")
    assert exc.value.status == 404


def test_namespaces_are_cluster_scoped(core: Any, kube: KubeAPI) -> None:
    created = core.create_namespace({"metadata": {"name": "analytics"}})
    assert created.metadata.namespace is None
    assert created.status.phase == "Active"
    assert core.read_namespace("analytics").metadata.uid == created.metadata.uid
    names = [n.metadata.name for n in core.list_namespace().items]
    assert names == ["analytics", "default", "kube-public", "kube-system"]

    core.create_namespaced_secret("analytics", {"metadata": {"name": "s"}})
    assert [s.metadata.name for s in core.list_namespaced_secret("analytics").items] == ["s"]
    assert core.list_namespaced_secret("default").items == []
    everywhere = core.list_secret_for_all_namespaces().items
    assert [(s.metadata.namespace, s.metadata.name) for s in everywhere] == [("analytics", "s")]

    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret("nowhere", {"metadata": {"name": "s"}})
    assert exc.value.status == 404
    assert status_of(exc)["message"] == 'namespaces "nowhere" not found'

    core.delete_namespace("analytics")
    wait_for(lambda: kube.get_object("", "namespaces", None, "analytics") is None)
    assert kube.get_object("", "secrets", "analytics", "s") is None


# --- CRUD, conflicts, errors -----------------------------------------------------------------


def test_secret_string_data_and_base64(core: Any, kube: KubeAPI) -> None:
    """pkg/apis/core/v1/conversion.go (Convert_v1_Secret_To_core_Secret): `stringData`
    overwrites `data` and is never stored; pkg/apis/core/validation/validation.go
    (ValidateSecret): `type` defaults to Opaque, a bad value is refused with field `data[key]`
    (a real server refuses bad base64 earlier, at decoding, with 400)."""
    created = core.create_namespaced_secret(
        "default",
        {"metadata": {"name": "tok"}, "data": {"a": "QQ=="}, "stringData": {"b": "hello"}},
    )
    assert created.data == {"a": "QQ==", "b": "aGVsbG8="}
    assert created.string_data is None
    assert created.type == "Opaque"
    stored = kube.get_object("", "secrets", "default", "tok")
    assert stored is not None and "stringData" not in stored

    replaced = core.replace_namespaced_secret(
        "tok", "default", {"metadata": {"name": "tok"}, "stringData": {"b": "bye"}}
    )
    assert replaced.data == {"b": "Ynll"}
    patched = core.patch_namespaced_secret("tok", "default", {"stringData": {"c": "x"}})
    assert patched.data == {"b": "Ynll", "c": "eA=="}

    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret(
            "default", {"metadata": {"name": "bad"}, "data": {"ok": "QQ==", "key": "not base64!"}}
        )
    body = status_of(exc)
    assert exc.value.status == 422
    assert body["reason"] == "Invalid"
    assert body["message"].startswith('Secret "bad" is invalid: data[key]: Invalid value')
    assert [c["field"] for c in body["details"]["causes"]] == ["data[key]"]
    assert body["details"]["kind"] == "Secret"
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_secret("tok", "default", {"data": {"b": "%%%"}})
    assert exc.value.status == 422


def test_create_answers_201_and_honours_generate_name(core: Any) -> None:
    secret, code, _ = core.create_namespaced_secret_with_http_info(
        "default", {"metadata": {"generateName": "event-"}}
    )
    assert code == 201
    name = secret.metadata.name
    assert name.startswith("event-") and len(name) == len("event-") + 5
    meta = secret.metadata
    assert meta.uid and meta.resource_version.isdigit()
    assert meta.creation_timestamp is not None


def test_already_exists_and_not_found(core: Any, custom: Any) -> None:
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'secrets "s" already exists'
    assert body["details"] == {"name": "s", "kind": "secrets"}

    with pytest.raises(ApiException) as exc:
        core.read_namespaced_secret("missing", "default")
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'secrets "missing" not found'
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "nope")
    assert status_of(exc)["message"] == f'widgets.{GROUP} "nope" not found'
    with pytest.raises(ApiException) as exc:
        core.delete_namespaced_secret("missing", "default")
    assert exc.value.status == 404


def test_resource_versions_and_conflicts(core: Any, custom: Any) -> None:
    """apiserver/pkg/registry/generic/registry/store.go (Update, OptimisticLockErrorMsg): a
    stale `resourceVersion` in a PUT or a patch answers 409 Conflict "the object has been
    modified"; none at all is an unconditional write."""
    first = core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    rv1 = int(first.metadata.resource_version)
    second = core.replace_namespaced_secret(
        "s",
        "default",
        {"metadata": {"name": "s", "resourceVersion": str(rv1)}, "stringData": {"k": "v"}},
    )
    rv2 = int(second.metadata.resource_version)
    assert rv2 > rv1
    assert second.metadata.uid == first.metadata.uid

    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_secret(
            "s", "default", {"metadata": {"name": "s", "resourceVersion": str(rv1)}}
        )
    body = status_of(exc)
    assert (exc.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]

    unconditional = core.replace_namespaced_secret("s", "default", {"metadata": {"name": "s"}})
    assert int(unconditional.metadata.resource_version) > rv2
    assert core.list_namespaced_secret("default").metadata.resource_version == (
        unconditional.metadata.resource_version
    )

    created = create_widget(custom, "w")
    stale = created["metadata"]["resourceVersion"]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", "w", {"spec": {"size": 2}}
    )
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            "widgets",
            "w",
            {"metadata": {"resourceVersion": stale}, "spec": {"size": 3}},
        )
    assert (exc.value.status, status_of(exc)["reason"]) == (409, "Conflict")


def test_noop_write_keeps_the_resource_version(core: Any) -> None:
    created = core.create_namespaced_secret("default", {"metadata": {"name": "s", "labels": {}}})
    same = core.patch_namespaced_secret("s", "default", {"metadata": {"labels": {}}})
    assert same.metadata.resource_version == created.metadata.resource_version


def test_json_patch(core: Any) -> None:
    """apiserver/pkg/endpoints/handlers/patch.go (jsonPatcher): a JSON patch that cannot be
    applied, a failed `test` among them, answers 422 and changes nothing."""
    created = core.create_namespaced_secret(
        "default", {"metadata": {"name": "s", "finalizers": ["a/b"]}}
    )
    rv = created.metadata.resource_version
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "c/d"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "1"}},
        {"op": "copy", "from": "/metadata/labels/x", "path": "/metadata/labels/y"},
        {"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/z"},
        {"op": "replace", "path": "/metadata/finalizers/0", "value": "e/f"},
    ]
    patched = core.patch_namespaced_secret("s", "default", ops)
    assert patched.metadata.finalizers == ["e/f", "c/d"]
    assert patched.metadata.labels == {"y": "1", "z": "1"}

    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_secret("s", "default", stale)
    assert (exc.value.status, status_of(exc)["reason"]) == (422, "Invalid")
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_secret("s", "default", [{"op": "remove", "path": "/nope/deeper"}])
    assert exc.value.status == 422
    assert core.read_namespaced_secret("s", "default").metadata.finalizers == ["e/f", "c/d"]


def test_merge_patch_null_deletes(custom: Any) -> None:
    created = create_widget(custom, "w", name="abc", labels={"k": "v", "j": "w"})
    assert created["spec"]["labels"] == {"k": "v", "j": "w"}
    patched = custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        "widgets",
        "w",
        {"metadata": {"labels": {"l": "1"}}, "spec": {"name": None, "labels": {"k": None}}},
    )
    assert "name" not in patched["spec"]
    assert patched["spec"]["labels"] == {"j": "w"}
    assert patched["metadata"]["labels"] == {"l": "1"}


def test_strategic_merge_patch_is_a_merge_for_builtins(api: ApiClient) -> None:
    core: Any = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    # The client sends a dict body as strategic merge patch.
    patched = core.patch_namespaced_config_map("c", "default", {"data": {"b": "2", "a": None}})
    assert patched.data == {"b": "2"}
    # As on a real server, custom resources refuse strategic merge patches.
    custom: Any = client.CustomObjectsApi(api)
    create_widget(custom, "w")
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            "widgets",
            "w",
            {"spec": {"size": 2}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415


# --- status subresource, generation, schema --------------------------------------------------


def test_status_subresource_isolation(custom: Any) -> None:
    """apiextensions-apiserver/pkg/registry/customresource/strategy.go (PrepareForCreate,
    PrepareForUpdate) and status_strategy.go: with a status subresource, the main resource
    never changes status and the status subresource changes nothing else."""
    created = create_widget(custom, "w")
    assert created["metadata"]["generation"] == 1
    assert "status" not in created

    with_status = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        "widgets",
        "w",
        {"status": {"phase": "Ready"}, "spec": {"size": 9}, "metadata": {"labels": {"a": "b"}}},
    )
    assert with_status["status"] == {"phase": "Ready"}
    assert with_status["spec"]["size"] == 1, "a status write must not change spec"
    assert "labels" not in with_status["metadata"]
    assert with_status["metadata"]["generation"] == 1
    assert int(with_status["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )

    main = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", "w", {"status": {"phase": "Failed"}}
    )
    assert main["status"] == {"phase": "Ready"}, "a main-resource write must keep status"
    assert main["metadata"]["resourceVersion"] == with_status["metadata"]["resourceVersion"]

    whole = custom.get_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w")
    whole["spec"]["size"] = 5
    whole["status"] = {"phase": "Failed"}
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", "w", whole
    )
    assert (replaced["spec"]["size"], replaced["status"]) == (5, {"phase": "Ready"})
    assert replaced["metadata"]["generation"] == 2

    replaced["status"] = {"phase": "Failed", "count": 3}
    via_put = custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, "default", "widgets", "w", replaced
    )
    assert via_put["status"] == {"phase": "Failed", "count": 3}
    assert via_put["metadata"]["generation"] == 2

    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", "widgets", "w", {"status": {"phase": "Lost"}}
        )
    assert exc.value.status == 422
    assert status_of(exc)["details"]["causes"][0]["field"] == "status.phase"


def test_status_goes_through_the_main_resource_without_subresource(api: ApiClient) -> None:
    core: Any = client.CoreV1Api(api)
    ns = core.patch_namespace("default", {"metadata": {"labels": {"team": "a"}}})
    assert ns.metadata.labels == {"team": "a"}
    ext: Any = client.ApiextensionsV1Api(api)
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    ext.create_custom_resource_definition(crd("plains", "Plain", schema, status=False))
    custom: Any = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", "plains", {"metadata": {"name": "p"}, "status": {"x": 1}}
    )
    assert created["status"] == {"x": 1}
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "plains", "p", {"status": {"x": 2}}
    )
    assert patched["status"] == {"x": 2}
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, "default", "plains", "p", {"status": {"x": 3}}
        )
    assert exc.value.status == 404


def test_generation_moves_on_spec_changes_only(custom: Any) -> None:
    def patch(body: dict[str, Any]) -> int:
        obj = custom.patch_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w", body)
        generation: int = obj["metadata"]["generation"]
        return generation

    create_widget(custom, "w")
    assert patch({"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}}) == 1
    assert patch({"spec": {"size": 4}}) == 2
    assert patch({"spec": {"size": 4}}) == 2
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", "widgets", "w", {"status": {"count": 1}}
    )
    assert patch({"metadata": {"finalizers": ["x/y"]}}) == 2
    assert patch({"spec": {"tags": ["t"]}}) == 3


def test_schema_validation_answers_422_with_field_paths(custom: Any) -> None:
    def refused(obj: dict[str, Any]) -> dict[str, Any]:
        with pytest.raises(ApiException) as exc:
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", "widgets", obj)
        assert exc.value.status == 422
        body = status_of(exc)
        assert body["reason"] == "Invalid"
        return body

    body = refused(widget("w", color="green"))
    assert body["message"] == (
        f'Widget.{GROUP} "w" is invalid: spec.color: Unsupported value: "green": '
        'supported values: "red", "blue"'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "green": supported values: "red", "blue"',
            "field": "spec.color",
        }
    ]
    assert body["details"]["name"] == "w"
    assert body["details"]["group"] == GROUP
    assert body["details"]["kind"] == "Widget"

    body = refused({"metadata": {"name": "w"}, "spec": {"a": "x"}})
    assert body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.size"}
    ]

    body = refused(widget("w", name="ABC", size=11, tags=["a", "b", "c"]))
    causes = {c["field"]: c for c in body["details"]["causes"]}
    assert set(causes) == {"spec.size", "spec.name", "spec.tags"}
    assert causes["spec.name"]["message"] == (
        "Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'"
    )
    assert causes["spec.size"]["message"] == (
        "Invalid value: 11: spec.size in body should be less than or equal to 10"
    )
    assert causes["spec.tags"]["reason"] == "FieldValueTooMany"
    assert body["message"].startswith(f'Widget.{GROUP} "w" is invalid: [')

    body = refused(widget("w", size="big"))
    assert body["details"]["causes"][0]["field"] == "spec.size"
    assert body["details"]["causes"][0]["reason"] == "FieldValueTypeInvalid"

    body = refused(widget("w", b="y"))  # both a and b: the CEL rule fails
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "object": exactly one of a or b',
            "field": "spec",
        }
    ]
    body = refused({"metadata": {"name": "w"}, "spec": {"size": 1, "name": "ab", "b": "y"}})
    assert [c["message"] for c in body["details"]["causes"]] == [
        'Invalid value: "object": name too short'
    ]

    create_widget(custom, "ok")
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", "widgets", "ok", {"spec": {"size": 0}}
        )
    assert exc.value.status == 422
    assert status_of(exc)["details"]["causes"][0]["field"] == "spec.size"


def test_defaults_applied_and_unknown_fields_pruned(custom: Any) -> None:
    created = create_widget(custom, "w", bogus=1, free={"any": {"thing": 1}})
    assert created["spec"] == {"size": 1, "a": "x", "color": "red", "free": {"any": {"thing": 1}}}
    assert "nested" not in created["spec"], "no default inside an absent parent"

    with_nested = create_widget(custom, "n", nested={"other": 1})
    assert with_nested["spec"]["nested"] == {"level": "info"}
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", "w", {"spec": {"color": None}, "top": "level"}
    )
    assert patched["spec"]["color"] == "red"
    assert "top" not in patched


# --- deletion: finalizers, garbage collection -------------------------------------------------


def test_finalizers_and_deletion_timestamp(custom: Any) -> None:
    obj = widget("w")
    obj["metadata"]["finalizers"] = ["test/hold"]
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", "widgets", obj)
    start = created["metadata"]["resourceVersion"]

    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w")
    assert deleting["metadata"]["deletionTimestamp"].endswith("Z")
    still = custom.get_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w")
    assert still["metadata"]["finalizers"] == ["test/hold"]
    assert custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w")

    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            "widgets",
            "w",
            {"metadata": {"finalizers": ["test/hold", "test/new"]}},
        )
    assert exc.value.status == 422

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", "widgets", "w", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "w")
    assert exc.value.status == 404

    events = collect(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        "widgets",
        resource_version=start,
        timeout_seconds=1,
    )
    assert events == [("MODIFIED", "w"), ("DELETED", "w")]


def test_owner_references_are_garbage_collected(core: Any, custom: Any, kube: KubeAPI) -> None:
    owner = create_widget(custom, "owner")
    other = create_widget(custom, "other")

    def ref(obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"],
        }

    core.create_namespaced_secret(
        "default", {"metadata": {"name": "owned", "ownerReferences": [ref(owner)]}}
    )
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "shared", "ownerReferences": [ref(owner), ref(other)]}}
    )
    core.create_namespaced_secret("default", {"metadata": {"name": "free"}})
    owned = core.read_namespaced_secret("owned", "default")
    secret_ref = {"apiVersion": "v1", "kind": "Secret", "name": "owned", "uid": owned.metadata.uid}
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "grandchild", "ownerReferences": [secret_ref]}}
    )

    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "widgets", "owner")
    wait_for(lambda: kube.get_object("", "configmaps", "default", "grandchild") is None)
    names = {s["metadata"]["name"] for s in kube.list_objects("", "secrets", "default")}
    assert names == {"shared", "free"}


# --- watches ---------------------------------------------------------------------------------


def test_watch_from_resource_version_replays_in_order(core: Any) -> None:
    core.create_namespaced_secret("default", {"metadata": {"name": "a"}})
    rv = core.list_namespaced_secret("default").metadata.resource_version
    core.create_namespaced_secret("default", {"metadata": {"name": "b"}})
    core.patch_namespaced_secret("a", "default", {"metadata": {"labels": {"x": "1"}}})
    core.delete_namespaced_secret("b", "default")
    events = collect(core.list_namespaced_secret, "default", resource_version=rv, timeout_seconds=1)
    assert events == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]

    from_scratch = collect(core.list_namespaced_secret, "default", timeout_seconds=1)
    assert from_scratch == [("ADDED", "a")]


def test_watch_too_old_resource_version_is_gone(tmp_path: pathlib.Path) -> None:
    """apiserver/pkg/storage/cacher/watch_cache.go: a watch from a resourceVersion older than
    the history answers 410 "too old resource version"; a newer one resumes."""
    with running_in_thread(KubeAPI(history=History(least=3, seconds=0.0))) as (kube, _):
        api = new_client(str(kube.write_kubeconfig(tmp_path / "k.yaml")))
        core: Any = client.CoreV1Api(api)
        first = core.create_namespaced_secret("default", {"metadata": {"name": "s0"}})
        for i in range(1, 6):
            core.create_namespaced_secret("default", {"metadata": {"name": f"s{i}"}})
        with pytest.raises(ApiException) as exc:
            collect(
                core.list_namespaced_secret,
                "default",
                resource_version=first.metadata.resource_version,
                timeout_seconds=1,
            )
        assert exc.value.status == 410
        assert "too old resource version" in str(exc.value.reason)
        recent = core.read_namespaced_secret("s3", "default").metadata.resource_version
        events = collect(
            core.list_namespaced_secret, "default", resource_version=recent, timeout_seconds=1
        )
        assert events == [("ADDED", "s4"), ("ADDED", "s5")]
        api.close()


def test_watch_timeout_and_bookmarks(kube: KubeAPI, core: Any) -> None:
    core.create_namespaced_secret("default", {"metadata": {"name": "a"}})
    started = time.monotonic()
    lines = []
    params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"}
    with httpx.stream("GET", f"{kube.url}/api/v1/namespaces/default/secrets", params=params) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(json.loads(line))
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3
    assert lines[0]["type"] == "ADDED"
    bookmarks = [e for e in lines if e["type"] == "BOOKMARK"]
    assert len(bookmarks) >= 2  # interval 0.2s in this fixture
    assert bookmarks[-1]["object"]["kind"] == "Secret"
    assert bookmarks[-1]["object"]["metadata"]["resourceVersion"] == (
        core.list_namespaced_secret("default").metadata.resource_version
    )

    params = {"watch": "1", "sendInitialEvents": "true", "allowWatchBookmarks": "true"}
    params["timeoutSeconds"] = "0.1"
    with httpx.stream("GET", f"{kube.url}/api/v1/namespaces/default/secrets", params=params) as r:
        initial = [json.loads(line) for line in r.iter_lines()]
    assert [e["type"] for e in initial[:2]] == ["ADDED", "BOOKMARK"]
    annotations = initial[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


def test_watch_selectors(core: Any) -> None:
    rv = core.list_namespaced_secret("default").metadata.resource_version
    core.create_namespaced_secret("default", {"metadata": {"name": "a", "labels": {"app": "x"}}})
    core.create_namespaced_secret("default", {"metadata": {"name": "b", "labels": {"app": "y"}}})
    core.create_namespaced_secret("default", {"metadata": {"name": "c"}})
    core.patch_namespaced_secret("c", "default", {"metadata": {"labels": {"app": "x"}}})
    core.patch_namespaced_secret("a", "default", {"metadata": {"labels": {"app": "z"}}})

    def names(**kwargs: Any) -> list[str]:
        items = core.list_namespaced_secret("default", **kwargs).items
        return [s.metadata.name for s in items]

    assert names(label_selector="app=x") == ["c"]
    assert names(label_selector="app==x") == ["c"]
    assert names(label_selector="app!=x") == ["a", "b"]
    assert names(label_selector="app in (x, y)") == ["b", "c"]
    assert names(label_selector="app notin (x,y)") == ["a"]
    assert names(label_selector="app") == ["a", "b", "c"]
    assert names(label_selector="!app") == []
    assert names(label_selector="app,app!=z") == ["b", "c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    with pytest.raises(ApiException) as exc:
        names(field_selector="spec.nope=1")
    assert exc.value.status == 400

    events = collect(
        core.list_namespaced_secret,
        "default",
        resource_version=rv,
        label_selector="app=x",
        timeout_seconds=1,
    )
    # c enters the selection by an edit (ADDED), a leaves it by one (DELETED).
    assert events == [("ADDED", "a"), ("ADDED", "c"), ("DELETED", "a")]
    # The DELETED one is the object as it was (still selected), at the edit's resourceVersion.
    *_, last = watch_stream(
        core.list_namespaced_secret,
        "default",
        resource_version=rv,
        label_selector="app=x",
        timeout_seconds=1,
    )
    left = last["raw_object"]["metadata"]
    edited = core.read_namespaced_secret("a", "default").metadata
    assert (left["labels"], left["resourceVersion"]) == ({"app": "x"}, edited.resource_version)
    events = collect(
        core.list_namespaced_secret,
        "default",
        resource_version=rv,
        field_selector="metadata.name=b",
        timeout_seconds=1,
    )
    assert events == [("ADDED", "b")]


def test_two_concurrent_watchers_see_the_same_order(core: Any) -> None:
    rv = core.list_namespaced_secret("default").metadata.resource_version
    watchers = [
        Background(core.list_namespaced_secret, "default", resource_version=rv, timeout_seconds=3)
        for _ in range(2)
    ]
    expected = []
    for i in range(20):
        core.create_namespaced_secret("default", {"metadata": {"name": f"s{i}"}})
        expected.append(("ADDED", f"s{i}"))
        if i % 3 == 0:
            core.delete_namespaced_secret(f"s{i}", "default")
            expected.append(("DELETED", f"s{i}"))
    for w in watchers:
        assert w.join(10)
        assert w.error is None
        assert w.events == expected


def test_stop_closes_open_watches(tmp_path: pathlib.Path) -> None:
    with running_in_thread(KubeAPI()) as (kube, _):
        api = new_client(str(kube.write_kubeconfig(tmp_path / "k.yaml")))
        core: Any = client.CoreV1Api(api)
        w = Background(core.list_namespaced_secret, "default")
        wait_for(lambda: kube.counts()[("watch", "secrets")] == 1)
        started = time.monotonic()
    assert w.join(5), "the watching client must end when the server stops"
    assert time.monotonic() - started < 5
    api.close()


# --- faults ----------------------------------------------------------------------------------


def test_fault_errors_then_success(kube: KubeAPI, core: Any) -> None:
    kube.faults.add("GET", r"/namespaces/default/secrets$", status=500, count=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_secret("default")
        assert exc.value.status == 500
        assert status_of(exc)["reason"] == "InternalError"
    assert core.list_namespaced_secret("default").items == []

    kube.faults.add("POST", "/secrets", status=409)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert exc.value.status == 409
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})

    kube.faults.add("*", "/secrets/s", status=429)
    answer = httpx.get(f"{kube.url}/api/v1/namespaces/default/secrets/s")
    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["reason"] == "TooManyRequests"
    # The client (urllib3) honours Retry-After on 429 by itself: it waits and succeeds.
    kube.faults.add("*", "/secrets/s", status=429)
    started = time.monotonic()
    assert core.read_namespaced_secret("s", "default").metadata.name == "s"
    assert time.monotonic() - started >= 1

    kube.faults.add("GET", "/secrets/s", status=500, count=5)
    kube.faults.clear()
    assert core.read_namespaced_secret("s", "default").metadata.name == "s"


def test_fault_delay(kube: KubeAPI, core: Any) -> None:
    kube.faults.add("GET", "/api/v1/namespaces$", status=0, delay=0.5)
    started = time.monotonic()
    assert core.list_namespace().items
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - started < 0.5


def test_fault_drop_watches(kube: KubeAPI, core: Any) -> None:
    w = Background(core.list_namespaced_secret, "default")
    wait_for(lambda: kube.counts()[("watch", "secrets")] == 1)
    assert kube.drop_watches() == 1
    assert w.join(5)
    assert w.error is not None  # cut mid-stream, not a clean end
    assert kube.drop_watches() == 0


def test_fault_unreachable(kube: KubeAPI, core: Any) -> None:
    kube.faults.unreachable = True
    with pytest.raises(Exception) as exc:
        core.list_namespace(_request_timeout=2)
    assert not isinstance(exc.value, ApiException), "no HTTP answer at all"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{kube.url}/version")
    kube.faults.unreachable = False
    assert core.list_namespace().items


# --- introspection for tests -----------------------------------------------------------------


def test_request_log_and_direct_access(kube: KubeAPI, core: Any, custom: Any) -> None:
    kube.requests.clear()
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    core.read_namespaced_secret("s", "default")
    core.list_secret_for_all_namespaces()
    create_widget(custom, "w")
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", "widgets", "w", {"status": {"count": 1}}
    )
    with pytest.raises(ApiException):
        core.read_namespaced_secret("gone", "default")
    got = [
        (r.verb, r.group, r.resource, r.subresource, r.namespace, r.name, r.code)
        for r in kube.requests
    ]
    assert got == [
        ("create", "", "secrets", "", "default", "", 201),
        ("get", "", "secrets", "", "default", "s", 200),
        ("list", "", "secrets", "", "", "", 200),
        ("create", GROUP, "widgets", "", "default", "", 201),
        ("patch", GROUP, "widgets", "status", "default", "w", 200),
        ("get", "", "secrets", "", "default", "gone", 404),
    ]
    assert kube.counts()[("get", "secrets")] == 2

    stored = kube.get_object(GROUP, "widgets", "default", "w")
    assert stored is not None and stored["status"] == {"count": 1}
    stored["status"] = {"count": 99}  # a copy: the server's object is untouched
    assert kube.get_object(GROUP, "widgets", "default", "w") == {**stored, "status": {"count": 1}}
    assert [o["metadata"]["name"] for o in kube.list_objects("", "namespaces")] == [
        "default",
        "kube-public",
        "kube-system",
    ]
    assert kube.get_object("", "secrets", "default", "nope") is None


def test_list_pagination(core: Any) -> None:
    for i in range(5):
        core.create_namespaced_secret("default", {"metadata": {"name": f"s{i}"}})
    first = core.list_namespaced_secret("default", limit=2)
    assert [s.metadata.name for s in first.items] == ["s0", "s1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_secret("default", limit=10, _continue=first.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["s2", "s3", "s4"]
    assert not rest.metadata._continue


def test_standalone_process(crd_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "standalone.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lucidgrant_testbed.kubeapi", "--crds", str(crd_dir),
         "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        api = new_client(str(kubeconfig))
        resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources
        assert "widgets" in {r.name for r in resources}
        api.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# --- a real kopf operator --------------------------------------------------------------------


def test_kopf_operator_reacts(
    kube: KubeAPI, custom: Any, core: Any, tmp_path: pathlib.Path
) -> None:
    kubeconfig = kube.write_kubeconfig(tmp_path / "kopf.yaml")
    log_path = tmp_path / "kopf.log"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", "default",
             "--verbose", str(HERE / "kopf_minimal_operator.py")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", "gadgets",
            {"metadata": {"name": "g"}, "spec": {"message": "hi"}},
        )  # fmt: skip

        def handled() -> dict[str, Any] | None:
            obj = kube.get_object(GROUP, "gadgets", "default", "g")
            return obj if obj and obj.get("status", {}).get("seen") else None

        try:
            obj = wait_for(handled, timeout=30)
        except AssertionError:
            raise AssertionError(log_path.read_text()) from None
        assert obj["status"]["echo"] == "hi"
        assert obj["metadata"]["finalizers"], "kopf adds its finalizer for the delete handler"

        def posted() -> bool:
            events = kube.list_objects("", "events", "default")
            return any(e["involvedObject"]["name"] == "g" for e in events)

        wait_for(posted)

        custom.delete_namespaced_custom_object(GROUP, VERSION, "default", "gadgets", "g")
        try:
            wait_for(lambda: kube.get_object(GROUP, "gadgets", "default", "g") is None, 30)
        except AssertionError:
            raise AssertionError(log_path.read_text()) from None
        assert core.read_namespaced_config_map("g-deleted", "default").data == {"by": "kopf"}
        finalizer_patches = [
            r for r in kube.requests if r.verb == "patch" and r.name == "g" and r.code == 200
        ]
        assert finalizer_patches
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

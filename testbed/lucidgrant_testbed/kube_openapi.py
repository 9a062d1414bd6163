"""The OpenAPI v3 documents: `/openapi/v3` lists a path per group version (kube-openapi
pkg/handler3/handler.go), `/openapi/v3/apis/<group>/<version>` (`api/v1` for the core group) is
that group version's document. A custom resource's is built from the CRD's schema as
apiextensions-apiserver/pkg/controller/openapi/builder/builder.go builds it: a component per
kind named by the reversed group (`dev.lucidgrant.v1alpha1.LucidGrant`) with
`x-kubernetes-group-version-kind`, `metadata` a reference to ObjectMeta, and the resource's
paths, whose writes take `fieldValidation`. kubectl reads them to validate (it sends
`fieldValidation=Strict` to a server whose PATCH declares the parameter, cli-runtime
resource/query_param_verifier_v3.go) and for `kubectl explain`. The built-in kinds have the same
paths, but their schemas only name apiVersion, kind and metadata (the emulator has no schemas
of them)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from lucidgrant_testbed.kube_types import JSON, ResourceType

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_OBJECT_META = f"{_META}.ObjectMeta"
_LIST_META = f"{_META}.ListMeta"
_STATUS = f"{_META}.Status"

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": {"type": "string", "default": ""}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string", "default": ""}}

# The parts of the apimachinery schemas a CRD's document references (abridged descriptions).
_SHARED: dict[str, JSON] = {
    _OBJECT_META: {
        "description": "ObjectMeta is metadata that all persisted resources must have, which "
        "includes all objects users must create.",
        "type": "object",
        "properties": {
            "annotations": {
                **_STRING_MAP,
                "description": "Annotations: unstructured key value "
                "metadata set by external tools.",
            },
            "creationTimestamp": {
                "type": "string",
                "format": "date-time",
                "description": "When this object was created (server time).",
            },
            "deletionTimestamp": {
                "type": "string",
                "format": "date-time",
                "description": "When this object will be deleted.",
            },
            "finalizers": {
                **_STRINGS,
                "description": "Must be empty before the object is deleted from the registry.",
            },
            "generateName": {**_STRING, "description": "Prefix of a name the server generates."},
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "The generation of the desired state.",
            },
            "labels": {
                **_STRING_MAP,
                "description": "Labels: keys and values to organize and select objects.",
            },
            "name": {**_STRING, "description": "Name must be unique within a namespace."},
            "namespace": {**_STRING, "description": "The namespace the name is unique in."},
            "ownerReferences": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "description": "Objects this one depends on.",
            },
            "resourceVersion": {**_STRING, "description": "The internal version of this object."},
            "uid": {**_STRING, "description": "UID: unique in time and space for this object."},
        },
    },
    _LIST_META: {
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "type": "object",
        "properties": {
            "continue": _STRING,
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": _STRING,
        },
    },
    _STATUS: {
        "description": "Status is a return value for calls that don't return other objects.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    },
}

_OPEN: JSON = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

_WRITE_PARAMETERS = [
    {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
    for name, text in (
        ("dryRun", "When present, modifications are not persisted."),
        ("fieldManager", "The name of the actor or entity making the changes."),
        ("fieldValidation", "Ignore, Warn (the default) or Strict: what the server does with "
         "unknown or duplicate fields in the object."),
    )
]  # fmt: skip


def component(rt: ResourceType, version: str, list_kind: bool = False) -> str:
    """The schema's name: the reversed group for a custom resource, the Go package for a
    built-in kind (`io.k8s.api.core.v1.Secret`)."""
    if rt.custom:
        prefix = ".".join(reversed(rt.group.split(".")))
    else:
        prefix = "io.k8s.api." + (rt.group.split(".")[0] or "core")
    return f"{prefix}.{version}.{rt.kind}{'List' if list_kind else ''}"


def _root(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def discovery(types: Iterable[ResourceType]) -> JSON:
    """`/openapi/v3`: a path per served group version."""
    paths: JSON = {}
    types = list(types)
    for group, version in sorted({(rt.group, v) for rt in types for v in rt.versions}):
        doc = document(types, group, version)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()
        root = _root(group, version)
        paths[root] = {"serverRelativeURL": f"/openapi/v3/{root}?hash={digest}"}
    return {"paths": paths}


def document(types: Iterable[ResourceType], group: str, version: str) -> JSON | None:
    """One group version's OpenAPI v3 document; None when nothing serves it."""
    kinds = [rt for rt in types if rt.group == group and version in rt.versions]
    if not kinds:
        return None
    schemas: JSON = copy.deepcopy(_SHARED)
    paths: JSON = {}
    for rt in sorted(kinds, key=lambda t: t.plural):
        name, list_name = component(rt, version), component(rt, version, list_kind=True)
        gvk = {"group": rt.group, "version": version, "kind": rt.kind}
        schemas[name] = _kind_schema(rt, version, gvk)
        schemas[list_name] = {
            "description": f"{rt.kind}List is a list of {rt.kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": _STRING,
                "items": {"type": "array", "items": {"$ref": _ref(name)}},
                "kind": _STRING,
                "metadata": {"allOf": [{"$ref": _ref(_LIST_META)}], "default": {}},
            },
            "x-kubernetes-group-version-kind": [{**gvk, "kind": f"{rt.kind}List"}],
        }
        paths.update(_paths(rt, version, gvk, name, list_name))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def _kind_schema(rt: ResourceType, version: str, gvk: JSON) -> JSON:
    schema: JSON = copy.deepcopy(rt.schemas.get(version) or _OPEN)
    properties: JSON = schema.setdefault("properties", {})
    properties["apiVersion"] = {
        **_STRING,
        "description": "APIVersion defines the versioned schema of this representation of an "
        "object.",
    }
    properties["kind"] = {
        **_STRING,
        "description": "Kind is a string value representing the REST resource this object "
        "represents.",
    }
    properties["metadata"] = {
        "allOf": [{"$ref": _ref(_OBJECT_META)}],
        "description": "Standard object's metadata.",
    }
    schema["x-kubernetes-group-version-kind"] = [gvk]
    return schema


def _operation(action: str, gvk: JSON, schema: str, writes: bool, verb: str) -> JSON:
    return {
        "description": f"{verb} {gvk['kind']}",
        "operationId": f"{verb}{gvk['kind']}",
        "parameters": list(_WRITE_PARAMETERS) if writes else [],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": _ref(schema)}}},
            },
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }


def _paths(rt: ResourceType, version: str, gvk: JSON, name: str, list_name: str) -> JSON:
    scope = "namespaces/{namespace}/" if rt.namespaced else ""
    base = f"/{_root(rt.group, version)}/{scope}{rt.plural}"
    one: dict[str, Any] = {
        "get": _operation("get", gvk, name, False, "read"),
        "put": _operation("put", gvk, name, True, "replace"),
        "patch": _operation("patch", gvk, name, True, "patch"),
        "delete": _operation("delete", gvk, _STATUS, False, "delete"),
    }
    paths: JSON = {
        base: {
            "get": _operation("list", gvk, list_name, False, "list"),
            "post": _operation("post", gvk, name, True, "create"),
        },
        f"{base}/{{name}}": one,
    }
    if rt.status_subresource:
        paths[f"{base}/{{name}}/status"] = {
            verb: _operation(action, gvk, name, action != "get", f"{verb}Status")
            for verb, action in (("get", "get"), ("put", "put"), ("patch", "patch"))
        }
    if rt.namespaced:
        paths[f"/{_root(rt.group, version)}/{rt.plural}"] = {
            "get": _operation("list", gvk, list_name, False, "listAllNamespaces")
        }
    return paths

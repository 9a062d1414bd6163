"""The resource types the emulated API serves: the built-in ones and those read from CRDs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lucidgrant_testbed.kube_errors import Cause

JSON = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")


@dataclass
class ResourceType:
    group: str
    versions: tuple[str, ...]  # served versions, the preferred one first
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    # Whether metadata.generation is tracked (custom resources and CRDs; not Secrets etc.).
    generation: bool = False
    # openAPIV3Schema per served version; only custom resources have one.
    schemas: dict[str, JSON] = field(default_factory=dict)
    # additionalPrinterColumns per served version; only custom resources have them.
    columns: dict[str, list[JSON]] = field(default_factory=dict)
    custom: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        version = version or self.versions[0]
        return f"{self.group}/{version}" if self.group else version

    def discovery(self) -> list[JSON]:
        """The entries of this type in its APIResourceList."""
        main: JSON = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": list(SUBRESOURCE_VERBS),
                }
            )
        return entries


_RBAC = "rbac.authorization.k8s.io"


def builtin_types() -> list[ResourceType]:
    return [
        ResourceType(
            "", ("v1",), "namespaces", "namespace", "Namespace", False, ("ns",),
            status_subresource=True,
        ),
        ResourceType("", ("v1",), "secrets", "secret", "Secret", True),
        ResourceType("", ("v1",), "configmaps", "configmap", "ConfigMap", True, ("cm",)),
        ResourceType("", ("v1",), "events", "event", "Event", True, ("ev",)),
        ResourceType("", ("v1",), "serviceaccounts", "serviceaccount", "ServiceAccount", True,
                     ("sa",)),
        ResourceType("coordination.k8s.io", ("v1",), "leases", "lease", "Lease", True),
        ResourceType(_RBAC, ("v1",), "roles", "role", "Role", True),
        ResourceType(_RBAC, ("v1",), "rolebindings", "rolebinding", "RoleBinding", True),
        ResourceType(_RBAC, ("v1",), "clusterroles", "clusterrole", "ClusterRole", False),
        ResourceType(_RBAC, ("v1",), "clusterrolebindings", "clusterrolebinding",
                     "ClusterRoleBinding", False),
        ResourceType(
            "apiextensions.k8s.io", ("v1",), "customresourcedefinitions",
            "customresourcedefinition", "CustomResourceDefinition", False, ("crd", "crds"),
            status_subresource=True, generation=True,
        ),
    ]  # fmt: skip


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order: GA before beta before alpha, higher numbers first."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    major, stage, minor = m.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


def crd_problems(crd: JSON) -> list[Cause]:
    """What the server would refuse in a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    for key in ("plural", "kind"):
        if not names.get(key):
            causes.append(Cause(f"spec.names.{key}", "Required value", "FieldValueRequired"))
    if not spec.get("group"):
        causes.append(Cause("spec.group", "Required value", "FieldValueRequired"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(
            Cause(
                "spec.scope",
                f'Unsupported value: "{spec.get("scope")}": supported values: '
                '"Cluster", "Namespaced"',
                "FieldValueNotSupported",
            )
        )
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            Cause(
                "spec.versions",
                "Invalid value: null: must have exactly one version marked as storage version",
            )
        )
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            Cause(
                "spec.versions",
                "Invalid value: []: must have exactly one version marked as storage version",
            )
        )
    expected = f"{names.get('plural')}.{spec.get('group')}"
    name = crd.get("metadata", {}).get("name")
    if not causes and name != expected:
        causes.append(
            Cause(
                "metadata.name",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    return causes


def from_crd(crd: JSON) -> ResourceType:
    """The resource type a (valid) CRD declares."""
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    served.sort(key=lambda v: version_priority(v["name"]))
    return ResourceType(
        group=spec["group"],
        versions=tuple(v["name"] for v in served),
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        status_subresource=any("status" in (v.get("subresources") or {}) for v in served),
        generation=True,
        schemas={
            v["name"]: (v.get("schema") or {}).get("openAPIV3Schema")
            or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            for v in served
        },
        columns={v["name"]: list(v.get("additionalPrinterColumns") or ()) for v in served},
        custom=True,
    )


def crd_status(crd: JSON) -> JSON:
    """The status the server gives an accepted CRD (names accepted, established)."""
    spec = crd["spec"]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    stamp = crd["metadata"]["creationTimestamp"]
    return {
        "acceptedNames": spec["names"],
        "conditions": [
            {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": stamp}
            for t, r, m in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            )
        ],
        "storedVersions": [storage],
    }

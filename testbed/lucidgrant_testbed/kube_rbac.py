"""Who is asking, and may they: bearer tokens, RBAC and the OwnerReferencesPermissionEnforcement
admission rule, evaluated as kube-apiserver does.

Sources in kubernetes/kubernetes: plugin/pkg/auth/authorizer/rbac/rbac.go (bindings to rules),
pkg/apis/rbac/v1/evaluation_helpers.go (verb / group / resource / resourceNames matching),
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go (the 403 message),
plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go (discovery is open to every
authenticated user), plugin/pkg/admission/gc/gc_admission.go (blockOwnerDeletion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lucidgrant_testbed.kube_errors import ApiError, qualified

JSON = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"
OWNER_REFERENCES_PERMISSION_ENFORCEMENT = "OwnerReferencesPermissionEnforcement"

# The non-resource paths the bootstrap roles system:discovery and system:public-info-viewer open
# to every authenticated user.
_DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi/", "/healthz", "/livez", "/readyz")


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups


ADMIN = User(
    "kubernetes-admin", ("kubeadm:cluster-admins", "system:masters", "system:authenticated")
)


def service_account(namespace: str, name: str) -> User:
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


@dataclass(frozen=True)
class Attributes:
    """A request as the authorizer sees it (authorizer.AttributesRecord)."""

    user: User
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests only

    @property
    def is_resource_request(self) -> bool:
        return bool(self.resource)


# (kind, namespace or "" when cluster-scoped, name) -> the RBAC object, or None.
Lookup = Callable[[str, str, str], JSON | None]
# Every RBAC object of a kind: ClusterRoleBindings, or the RoleBindings of one namespace.
Listing = Callable[[str, str], Iterable[JSON]]


def _subject_matches(subject: JSON, user: User, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def _rule_allows(rule: JSON, attrs: Attributes) -> bool:
    def has(key: str, value: str, wildcard: str = "*") -> bool:
        values = rule.get(key) or []
        return wildcard in values or value in values

    if not has("verbs", attrs.verb):
        return False
    if not attrs.is_resource_request:
        urls = rule.get("nonResourceURLs") or []
        return any(
            url in ("*", attrs.path) or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in urls
        )
    if not has("apiGroups", attrs.group):
        return False
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = rule.get("resources") or []
    if not (
        "*" in resources
        or combined in resources
        or (attrs.subresource and f"*/{attrs.subresource}" in resources)
    ):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _bound_rules(
    bindings: Iterable[JSON], attrs: Attributes, lookup: Lookup, errors: list[str]
) -> Iterator[JSON]:
    for binding in bindings:
        namespace = binding["metadata"].get("namespace", "")
        if not any(
            _subject_matches(s, attrs.user, namespace) for s in binding.get("subjects") or []
        ):
            continue
        ref = binding.get("roleRef") or {}
        kind, name = ref.get("kind", ""), ref.get("name", "")
        role = lookup(kind, namespace if kind == "Role" else "", name)
        if role is None:
            errors.append(f'{qualified(kind.lower(), RBAC_GROUP)} "{name}" not found')
            continue
        yield from role.get("rules") or []


def authorize(attrs: Attributes, lookup: Lookup, listing: Listing) -> tuple[bool, str]:
    """Allowed?, and the reason RBAC gives when not (empty unless a bound role is missing)."""
    if attrs.user.is_admin:
        return True, ""
    if (
        not attrs.is_resource_request
        and attrs.verb == "get"
        and "system:authenticated" in attrs.user.groups
        and attrs.path.startswith(_DISCOVERY_PREFIXES)
    ):
        return True, ""
    errors: list[str] = []
    scopes = [listing("ClusterRoleBinding", "")]
    if attrs.namespace:
        scopes.append(listing("RoleBinding", attrs.namespace))
    for bindings in scopes:
        if any(_rule_allows(rule, attrs) for rule in _bound_rules(bindings, attrs, lookup, errors)):
            return True, ""
    return False, ("RBAC: " + "; ".join(errors)) if errors else ""


def forbidden_message(attrs: Attributes) -> str:
    user = attrs.user.name
    if not attrs.is_resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}" '
        + where
    )


def forbidden(attrs: Attributes, why: str) -> ApiError:
    """403 as apierrors.NewForbidden words it: `<resource> ["<name>"] is forbidden: <why>`."""
    if not attrs.is_resource_request:
        return ApiError(403, "Forbidden", f"forbidden: {why}")
    what = qualified(attrs.resource, attrs.group)
    subject = f'{what} "{attrs.name}"' if attrs.name else what
    return ApiError(
        403, "Forbidden", f"{subject} is forbidden: {why}", attrs.name, attrs.group, attrs.resource
    )


def denied(attrs: Attributes, reason: str) -> ApiError:
    """The answer to a request the authorizer did not allow."""
    message = forbidden_message(attrs)
    return forbidden(attrs, f"{message}: {reason}" if reason else message)


def _refs(obj: JSON | None) -> list[JSON]:
    if obj is None:
        return []
    return [r for r in obj["metadata"].get("ownerReferences") or [] if isinstance(r, dict)]


def new_blocking_refs(obj: JSON, old: JSON | None) -> list[JSON]:
    """References that block owner deletion and did not before (newBlockingOwnerDeletionRefs)."""
    before = {r.get("uid"): r for r in _refs(old)}
    return [
        ref
        for ref in _refs(obj)
        if ref.get("blockOwnerDeletion") is True
        and (
            ref.get("uid") not in before
            or before[ref.get("uid")].get("blockOwnerDeletion") is not True
        )
    ]


def owner_reference_check(
    attrs: Attributes,
    obj: JSON,
    old: JSON | None,
    resource_of: Callable[[str, str], str | None],
    allowed: Callable[[Attributes], tuple[bool, str]],
) -> None:
    """OwnerReferencesPermissionEnforcement: changing ownerReferences on an update needs
    `delete` on the object; setting blockOwnerDeletion needs `update` on the owner's
    `finalizers` subresource. `resource_of(apiVersion, kind)` maps an owner to its plural."""
    if old is not None and _refs(obj) == _refs(old):
        return
    if old is None and not _refs(obj):
        return
    name = attrs.name or obj["metadata"].get("name", "")
    target = Attributes(
        attrs.user,
        attrs.verb,
        attrs.group,
        attrs.resource,
        attrs.subresource,
        attrs.namespace,
        name,
    )
    if old is not None:
        ok, reason = allowed(
            Attributes(
                attrs.user, "delete", attrs.group, attrs.resource, attrs.subresource,
                attrs.namespace, name,
            )
        )  # fmt: skip
        if not ok:
            raise forbidden(
                target, f"cannot set an ownerRef on a resource you can't delete: {reason}, <nil>"
            )
    for ref in new_blocking_refs(obj, old):
        api_version = str(ref.get("apiVersion", ""))
        group = api_version.rpartition("/")[0]
        plural = resource_of(api_version, str(ref.get("kind", "")))
        ok, reason = (
            (False, "")
            if plural is None
            else allowed(
                Attributes(
                    attrs.user, "update", group, plural, "finalizers", attrs.namespace,
                    str(ref.get("name", "")),
                )
            )
        )  # fmt: skip
        if not ok:
            raise forbidden(
                target,
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you "
                f"can't set finalizers on: {reason}, <nil>",
            )

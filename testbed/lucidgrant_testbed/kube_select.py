"""Label and field selectors, parsed once per request and matched per object."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lucidgrant_testbed.kube_errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:\s(in|notin)\s*\((.*)\)\s*)?$")
_OP_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")

# The fields the real server indexes besides metadata.name / metadata.namespace.
_EXTRA_FIELDS: dict[str, frozenset[str]] = {
    "secrets": frozenset({"type"}),
    "events": frozenset(
        {
            "involvedObject.kind",
            "involvedObject.name",
            "involvedObject.namespace",
            "involvedObject.uid",
            "reason",
            "type",
        }
    ),
    "namespaces": frozenset({"status.phase"}),
}


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside the parentheses of `in (a,b)`."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _label_requirement(text: str) -> Matcher:
    if m := _OP_RE.match(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _SET_RE.match(text):
        negated, key, op, values = m.groups()
        if op is None:
            if negated:
                return lambda labels: key not in labels
            return lambda labels: key in labels
        if negated:
            raise bad_request(f"unable to parse requirement: {text!r}")
        allowed = {v.strip() for v in values.split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in allowed
        return lambda labels: labels.get(key) not in allowed
    raise bad_request(f"unable to parse requirement: {text!r}")


def label_matcher(text: str | None) -> Matcher | None:
    """A predicate over an object's labels for a `labelSelector`, or None to match all."""
    if not text:
        return None
    requirements = [_label_requirement(part) for part in _split_requirements(text)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_matcher(text: str | None, resource: str) -> Matcher | None:
    """A predicate for a `fieldSelector`; unsupported fields answer 400 like the real server."""
    if not text:
        return None
    allowed = {"metadata.name", "metadata.namespace"} | _EXTRA_FIELDS.get(resource, frozenset())
    checks: list[tuple[str, bool, str]] = []
    for part in _split_requirements(text):
        m = _OP_RE.match(part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, value = m.groups()
        if path not in allowed:
            raise bad_request(f'field label not supported: "{path}"')
        checks.append((path, op != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, path) == value) == eq for path, eq, value in checks)

    return matches


def combine(*matchers: Matcher | None) -> Matcher | None:
    active = [m for m in matchers if m is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(m(obj) for m in active)

"""Object metadata validation, with the real server's field paths and messages.

The rules are apimachinery's: names (RFC 1123 subdomain, or label for namespaces), label keys and
values, annotation keys and their total size, finalizer names (api/validation/objectmeta.go,
apis/meta/v1/validation/validation.go, api/validate/content/kube.go, util/validation/
validation.go) and Secret data keys (pkg/apis/core/validation/validation.go, IsConfigMapKey).
"""

from __future__ import annotations

import re
from typing import Any

from lucidgrant_testbed.kube_errors import Cause

JSON = dict[str, Any]

TOTAL_ANNOTATION_SIZE = 256 * 1024
LABEL_VALUE_MAX = 63
SUBDOMAIN_MAX = 253

_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + r"(\." + _LABEL_FMT + ")*"
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN_FMT}$")
_DNS_LABEL_RE = re.compile(f"^{_LABEL_FMT}$")
_KEY_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_KEY_NAME_RE = re.compile(f"^{_KEY_NAME_FMT}$")
_LABEL_VALUE_FMT = f"({_KEY_NAME_FMT})?"
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_RE = re.compile(f"^{_CONFIG_KEY_FMT}$")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character"
)
_DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_KEY_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


_KEY_NAME_ERR = _regex_error(_KEY_NAME_MSG, _KEY_NAME_FMT, "MyName", "my.name", "123-abc")
_LABEL_VALUE_ERR = _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
_CONFIG_KEY_ERR = _regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def _quote(value: str) -> str:
    """Go's %q for the strings these rules see (printable ASCII in practice)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _invalid(path: str, value: str, message: str) -> Cause:
    return Cause(path, f"Invalid value: {_quote(value)}: {message}")


def subdomain_problems(value: str) -> list[str]:
    errs = [_max_len(SUBDOMAIN_MAX)] if len(value) > SUBDOMAIN_MAX else []
    if not _SUBDOMAIN_RE.match(value):
        errs.append(_regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return errs


def dns_label_problems(value: str) -> list[str]:
    errs = [_max_len(63)] if len(value) > 63 else []
    if not _DNS_LABEL_RE.match(value):
        if _SUBDOMAIN_RE.match(value):
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_DNS_LABEL_MSG, _LABEL_FMT, "my-name", "123-abc"))
    return errs


def qualified_name_problems(value: str) -> list[str]:
    """IsQualifiedName (= IsLabelKey): an optional DNS subdomain prefix and '/', then a name."""
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in subdomain_problems(prefix)]
    else:
        return [
            "a valid label key "
            + _KEY_NAME_ERR
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part " + _max_len(63))
    if not _KEY_NAME_RE.match(name):
        errs.append("name part " + _KEY_NAME_ERR)
    return errs


def label_value_problems(value: str) -> list[str]:
    errs = [_max_len(LABEL_VALUE_MAX)] if len(value) > LABEL_VALUE_MAX else []
    if not _LABEL_VALUE_RE.match(value):
        errs.append(_LABEL_VALUE_ERR)
    return errs


def config_key_problems(value: str) -> list[str]:
    """IsConfigMapKey: the rule for the keys of a Secret's or ConfigMap's data."""
    errs = [_max_len(SUBDOMAIN_MAX)] if len(value) > SUBDOMAIN_MAX else []
    if not _CONFIG_KEY_RE.match(value):
        errs.append(_CONFIG_KEY_ERR)
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def _string_map(meta: JSON, key: str) -> tuple[dict[str, str], list[Cause]]:
    raw = meta.get(key) or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        return {}, [Cause(f"metadata.{key}", "Invalid value: must be a map of strings")]
    return raw, []


def metadata_problems(meta: JSON, *, name_rule: str, check_name: bool) -> list[Cause]:
    """ValidateObjectMeta's checks. `name_rule` is "label" (namespaces) or "subdomain";
    names are checked on create only (an update cannot change them)."""
    causes: list[Cause] = []
    name = meta.get("name") or ""
    if check_name and name:
        rule = dns_label_problems if name_rule == "label" else subdomain_problems
        causes += [_invalid("metadata.name", name, m) for m in rule(name)]
    labels, bad = _string_map(meta, "labels")
    causes += bad
    for key, value in labels.items():
        causes += [_invalid("metadata.labels", key, m) for m in qualified_name_problems(key)]
        causes += [_invalid("metadata.labels", value, m) for m in label_value_problems(value)]
    annotations, bad = _string_map(meta, "annotations")
    causes += bad
    for key in annotations:
        causes += [
            _invalid("metadata.annotations", key, m) for m in qualified_name_problems(key.lower())
        ]
    if sum(len(k) + len(v) for k, v in annotations.items()) > TOTAL_ANNOTATION_SIZE:
        causes.append(
            Cause(
                "metadata.annotations",
                f"Too long: must have at most {TOTAL_ANNOTATION_SIZE} bytes",
                "FieldValueTooLong",
            )
        )
    for finalizer in meta.get("finalizers") or []:
        problems = qualified_name_problems(str(finalizer))
        causes += [_invalid("metadata.finalizers", str(finalizer), m) for m in problems]
    return causes


def data_key_problems(data: dict[str, Any]) -> list[Cause]:
    return [
        _invalid(f"data[{key}]", key, message)
        for key in data
        for message in config_key_problems(key)
    ]

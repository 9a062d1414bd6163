"""A CRD version's openAPIV3Schema: pruning, defaulting and validation as the API server does.

The order is the server's: unknown fields and non-nullable nulls are pruned, defaults are
applied (recursively, only inside objects that are present), then the result is validated.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

from lucidgrant_testbed.kube_cel import CelEvalError, CelSyntaxError, compile_rule
from lucidgrant_testbed.kube_errors import Cause

logger = logging.getLogger(__name__)

Schema = dict[str, Any]

# Fields every object keeps whatever its schema says; metadata is the server's, not the schema's.
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")

_warned_rules: set[str] = set()


@lru_cache(maxsize=1024)
def _compiled(rule: str) -> Callable[[Any], bool] | None:
    try:
        return compile_rule(rule)
    except CelSyntaxError as e:
        if rule not in _warned_rules:
            _warned_rules.add(rule)
            logger.warning("Skipping a CEL rule outside the supported subset: %r (%s)", rule, e)
        return None


@lru_cache(maxsize=1024)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def prune(value: Any, schema: Schema, *, root: bool = False, path: str = "") -> list[str]:
    """Drop fields the schema does not know (in place); return their paths (`spec.x`,
    `spec.list[0].y`), sorted, as the server reports unknown fields
    (apiextensions-apiserver/pkg/apiserver/schema/pruning/algorithm.go)."""
    unknown: list[str] = []
    prefix = f"{path}." if path else ""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            if root and key in _ROOT_FIELDS:
                continue
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                if not (_preserves(schema) or extra is True):
                    del value[key]
                    unknown.append(prefix + key)
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
                continue
            unknown += prune(value[key], sub, path=prefix + key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            unknown += prune(item, schema["items"], path=f"{path}[{index}]")
    return sorted(unknown)


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill in `default`s (in place) for absent fields of present objects; recurse."""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = json.loads(json.dumps(sub["default"]))
            if key in value:
                apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value.keys() - props.keys():
                apply_defaults(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])
    return value


def _render(value: Any) -> str:
    """How the server prints an offending value in `Invalid value: ...`."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_ok(value: Any, schema: Schema) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    expected = schema.get("type")
    if expected is None:
        return True
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return bool(_type_name(value) == expected)


def _date_time_ok(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


class Validator:
    """Collects every violation of one object, with the server's field paths and wording."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.causes.append(Cause(path, f"Invalid value: {_render(value)}: {detail}"))

    def validate(self, value: Any, schema: Schema, path: str, *, root: bool = False) -> None:
        where = path or "<root>"
        if not _type_ok(value, schema):
            kind = "null" if value is None else _type_name(value)
            self.causes.append(
                Cause(
                    path,
                    f'Invalid value: "{kind}": {where} in body must be of type '
                    f'{schema.get("type", "int-or-string")}: "{kind}"',
                    "FieldValueTypeInvalid",
                )
            )
            return
        if value is None:
            return
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(json.dumps(v) for v in schema["enum"])
            self.causes.append(
                Cause(
                    path,
                    f"Unsupported value: {json.dumps(value)}: supported values: {supported}",
                    "FieldValueNotSupported",
                )
            )
        if isinstance(value, str):
            self._string(value, schema, path, where)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            self._number(value, schema, path, where)
        elif isinstance(value, list):
            self._array(value, schema, path, where)
        elif isinstance(value, dict):
            self._object(value, schema, path, root=root)
        self._rules(value, schema, path)

    def _string(self, value: str, schema: Schema, path: str, where: str) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.invalid(
                path, value, f"{where} in body should be at least {schema['minLength']} chars long"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.causes.append(
                Cause(
                    path,
                    f"Too long: may not be more than {schema['maxLength']} bytes",
                    "FieldValueTooLong",
                )
            )
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            self.invalid(path, value, f"{where} in body should match '{schema['pattern']}'")
        if schema.get("format") == "date-time" and not _date_time_ok(value):
            self.invalid(path, value, f'{where} in body must be of type date-time: "{value}"')

    def _number(self, value: float, schema: Schema, path: str, where: str) -> None:
        if "minimum" in schema:
            low = schema["minimum"]
            if schema.get("exclusiveMinimum") and value <= low:
                self.invalid(path, value, f"{where} in body should be greater than {low}")
            elif value < low:
                detail = f"{where} in body should be greater than or equal to {low}"
                self.invalid(path, value, detail)
        if "maximum" in schema:
            high = schema["maximum"]
            if schema.get("exclusiveMaximum") and value >= high:
                self.invalid(path, value, f"{where} in body should be less than {high}")
            elif value > high:
                detail = f"{where} in body should be less than or equal to {high}"
                self.invalid(path, value, detail)

    def _array(self, value: list[Any], schema: Schema, path: str, where: str) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.invalid(
                path, len(value), f"{where} in body should have at least {schema['minItems']} items"
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.causes.append(
                Cause(
                    path,
                    f"Too many: {len(value)}: must have at most {schema['maxItems']} items",
                    "FieldValueTooMany",
                )
            )
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                self.validate(item, items, f"{path}[{index}]")

    def _object(self, value: dict[str, Any], schema: Schema, path: str, *, root: bool) -> None:
        prefix = f"{path}." if path else ""
        for key in schema.get("required") or ():
            if key not in value:
                self.causes.append(Cause(prefix + key, "Required value", "FieldValueRequired"))
        props: dict[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value and not (root and key == "metadata"):
                self.validate(value[key], sub, prefix + key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value.keys() - props.keys():
                self.validate(value[key], extra, f"{path}[{key}]")

    def _rules(self, value: Any, schema: Schema, path: str) -> None:
        for rule in schema.get("x-kubernetes-validations") or ():
            text = rule.get("rule", "")
            if "oldSelf" in text:
                continue  # transition rules need the old object; not emulated
            check = _compiled(text)
            if check is None:
                continue
            message = rule.get("message") or f"failed rule: {text}"
            try:
                ok = check(value)
            except CelEvalError as e:
                ok, message = False, f"{e} evaluating rule: {text}"
            if not ok:
                field_path = path + (rule.get("fieldPath") or "")
                self.causes.append(
                    Cause(
                        field_path,
                        f'Invalid value: "{_type_name(value)}": {message}',
                        rule.get("reason") or "FieldValueInvalid",
                    )
                )


def admit(obj: dict[str, Any], schema: Schema) -> tuple[list[str], list[Cause]]:
    """Prune and default `obj` in place, then validate it; return the unknown fields pruned
    and the violations."""
    unknown = prune(obj, schema, root=True)
    apply_defaults(obj, schema)
    validator = Validator()
    validator.validate(obj, schema, "", root=True)
    return unknown, validator.causes

"""Table answers (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), what `kubectl get`
prints: the columns and cells the API server computes.

Custom resources: Name, then the CRD version's additionalPrinterColumns, or an Age column when it
has none (apiextensions-apiserver/pkg/registry/customresource/tableconvertor/tableconvertor.go,
pkg/apiserver/helpers.go serveDefaultColumnsIfEmpty). Built-in kinds: the default convertor's
Name and Created At (apiserver/pkg/registry/rest/table.go). Each row carries the object's
metadata as a PartialObjectMetadata, or the object, or nothing (`includeObject`,
apiserver/pkg/endpoints/handlers/response.go, asTable).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from lucidgrant.cli.common import human
from lucidgrant_testbed.kube_errors import ApiError, bad_request
from lucidgrant_testbed.kube_types import JSON, ResourceType

_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC."
)
_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "description": _NAME_DOC}
_AS = tuple(
    (kind, "meta.k8s.io", version)
    for kind in ("Table", "PartialObjectMetadata")
    for version in ("v1", "v1beta1")
)
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def wanted_as(accept: str) -> tuple[str, str] | None:
    """What the first acceptable media type of an Accept header asks the object as, with its
    meta.k8s.io version: ("Table" or "PartialObjectMetadata", "v1" or "v1beta1"), or None for
    the object itself."""
    for media in accept.split(","):
        kind, *params = (p.strip() for p in media.split(";"))
        options = dict(p.partition("=")[::2] for p in params)
        if kind in ("application/json", "*/*") and "as" not in options:
            return None
        wanted = (options.get("as"), options.get("g"), options.get("v"))
        if kind == "application/json" and wanted in _AS:
            return wanted[0], wanted[2]
    return None


def partial_object_metadata(obj: JSON, version: str) -> JSON:
    """The object's metadata alone, as a get with `as=PartialObjectMetadata` answers
    (apiserver/pkg/endpoints/handlers/response.go, asPartialObjectMetadata)."""
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": obj["metadata"],
    }


def table(rt: ResourceType, version: str, objects: list[JSON], meta: JSON, include: str) -> JSON:
    """The Table of these objects (one for a get); `meta` is the list's metadata."""
    if include not in ("", "Metadata", "Object", "None"):
        raise bad_request(f'unrecognized includeObject value: "{include}"')
    if rt.custom:
        columns = rt.columns.get(version) or [_AGE]
        definitions = [_NAME_COLUMN] + [_definition(c) for c in columns]
    else:
        columns = []
        definitions = [
            _NAME_COLUMN,
            {"name": "Created At", "type": "date", "format": "", "description": _CREATED_DOC},
        ]
    rows = []
    for obj in objects:
        if rt.custom:
            cells = [obj["metadata"]["name"]] + [_cell(c, obj) for c in columns]
        else:
            cells = [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp")]
        row: JSON = {"cells": cells}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions,
        "rows": rows,
    }


def _definition(column: JSON) -> JSON:
    return {
        "name": column["name"],
        "type": column["type"],
        "format": column.get("format", ""),
        "description": column.get("description")
        or f"Custom resource definition column (in JSONPath format): {column['jsonPath']}",
        "priority": column.get("priority", 0),
    }


def _cell(column: JSON, obj: JSON) -> Any:
    """tableconvertor.go: the first JSONPath result; a string column prints it as the jsonpath
    printer does, other types keep a value of their type; missing is null."""
    found = evaluate(column["jsonPath"], obj)
    if not found:
        return None
    value = found[0]
    kind = column["type"]
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if value is None:
        return None
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return "<invalid>"
        return human_duration((datetime.now(UTC) - at).total_seconds())
    return None


_SEGMENT = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)==\s*"([^"]*)"\)\]')


def evaluate(path: str, obj: Any) -> list[Any]:
    """The results of a simple JSONPath (`.a.b`, `[0]`, `[?(@.type=="Ready")]`), as
    client-go/util/jsonpath finds them with missing keys allowed."""
    text = path.strip().removeprefix("{").removesuffix("}").removeprefix("$")
    values = [obj]
    position = 0
    while position < len(text):
        m = _SEGMENT.match(text, position)
        if m is None:
            raise ApiError(500, "InternalError", f"unrecognized column definition {path!r}")
        position = m.end()
        key, index, field, wanted = m.groups()
        found: list[Any] = []
        for value in values:
            if key is not None and isinstance(value, dict) and key in value:
                found.append(value[key])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif field is not None and isinstance(value, list):
                found += [item for item in value if evaluate("." + field, item)[:1] == [wanted]]
        values = found
    return values


def human_duration(seconds: float) -> str:
    """apimachinery/pkg/util/duration/duration.go HumanDuration, which `kubectl lucidgrant`
    prints too: a time more than a second in the future is `<invalid>`."""
    return "<invalid>" if int(seconds) < -1 else human(seconds)

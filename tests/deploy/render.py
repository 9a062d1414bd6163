"""Render deploy/'s kustomizations as `kubectl apply -k` would, for the features they use, so that
tools that read plain manifests (checkov in `make lint`) see what a cluster would get. kustomize
itself is not installed on these machines.

Supported, and nothing else (anything else is an error, never a silent mis-render): `resources`
(files and folders), `patches` by path holding either `$patch: delete` or a strategic-merge patch
(maps merged, containers merged by name, other lists replaced), and `labels` without selectors.

    python -m tests.deploy.render OUT_DIR   # writes one YAML file per kustomization
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The kustomizations a person applies, and the file each renders to.
TARGETS = {"deploy.yaml": DEPLOY, "namespaced.yaml": DEPLOY / "overlays" / "namespaced"}

Doc = dict[str, Any]
KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches", "labels"}


def _key(doc: Doc) -> tuple[str, str, str | None]:
    meta = doc.get("metadata") or {}
    return doc["kind"], meta["name"], meta.get("namespace")


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it to what deploy/ patches."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        by_name = {item["name"]: item for item in base}
        merged = [merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        patched = {i["name"] for i in patch}
        return [i for i in base if i["name"] not in patched] + merged
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in items)


def render(folder: Path) -> list[Doc]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"{folder}: kustomization fields not supported here: {sorted(unknown)}")
    docs: list[Doc] = []
    for entry in kustomization.get("resources") or []:
        target = folder / entry
        docs.extend(render(target) if target.is_dir() else _load(target))
    for patch_entry in kustomization.get("patches") or []:
        if set(patch_entry) != {"path"}:
            raise ValueError(f"{folder}: only patches by path are supported: {patch_entry}")
        for patch in _load(folder / patch_entry["path"]):
            matches = [i for i, d in enumerate(docs) if _key(d) == _key(patch)]
            if len(matches) != 1:
                raise ValueError(f"{folder}: patch {_key(patch)} matches {len(matches)} objects")
            (index,) = matches
            if patch.get("$patch") == "delete":
                del docs[index]
            else:
                docs[index] = merge(docs[index], patch)
    for label in kustomization.get("labels") or []:
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise ValueError(f"{folder}: labels on selectors or templates are not supported")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    keys = [_key(d) for d in docs]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise ValueError(f"{folder}: objects defined twice: {sorted(map(str, duplicates))}")
    return docs


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, folder in TARGETS.items():
        path = out / name
        path.write_text(yaml.safe_dump_all(render(folder), sort_keys=False))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1])):
        print(
            f"rendered {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
        )

"""What deploy/ installs for the operator, as objects for the emulated API server to enforce."""

from __future__ import annotations

from typing import Any

import yaml

from lucidgrant.testbed.kube_rbac import service_account

from .harness import ROOT

OPERATOR = service_account("lucidgrant-system", "lucidgrant")


def installed(mode: str, namespaces: tuple[str, ...] = ("default",)) -> list[dict[str, Any]]:
    """The namespace, ServiceAccount and RBAC objects that deploy/ installs: "cluster" is
    deploy/base as is (the operator runs with --all-namespaces); "namespaced" is
    deploy/overlays/namespaced with its per-namespace Role and RoleBinding for each of
    `namespaces` (as its README says to edit them) instead of the base's ClusterRole."""
    base = [
        doc
        for name in ("namespace", "serviceaccount", "rbac")
        for doc in yaml.safe_load_all((ROOT / f"deploy/base/{name}.yaml").read_text())
    ]
    if mode == "cluster":
        return base
    overlay = ROOT / "deploy/overlays/namespaced/namespaced-rbac.yaml"
    docs = [d for d in base if d["metadata"]["name"] != "lucidgrant" or "Cluster" not in d["kind"]]
    for doc in yaml.safe_load_all(overlay.read_text()):
        if doc["kind"].startswith("Cluster"):
            docs.append(doc)
        elif doc["metadata"]["namespace"] == "team-a":
            docs += [{**doc, "metadata": {**doc["metadata"], "namespace": ns}} for ns in namespaces]
    return docs

"""What deploy/ installs for the operator, as objects for the emulated API server to enforce."""

from __future__ import annotations

from typing import Any

import yaml

from lucidgrant_testbed.kube_rbac import service_account

from .harness import ROOT

OPERATOR = service_account("lucidgrant-system", "lucidgrant")


def installed(mode: str, namespaces: tuple[str, ...] = ("default",)) -> list[dict[str, Any]]:
    """The namespace, ServiceAccount and RBAC objects that deploy/ installs: "cluster" is
    deploy/base as is (the operator runs with --all-namespaces); "namespaced" is
    deploy/overlays/namespaced with its per-namespace Role and RoleBinding (written for team-a)
    for each of `namespaces`, as its comments say to edit them, instead of the base's
    ClusterRole."""
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
        namespace = doc["metadata"].get("namespace")
        if namespace == "team-a":  # the overlay's example of a watched namespace
            docs += [{**doc, "metadata": {**doc["metadata"], "namespace": ns}} for ns in namespaces]
        elif namespace != "team-b":  # its second example, left out
            docs.append(doc)
    return docs

"""The deploy/ manifests, the kustomizations and the Dockerfile, checked without a cluster.

- every manifest validates against the Kubernetes 1.30 schemas (custom resources by an explicit
  allowlist of kinds; the example LucidGrants against the CRD's own schema instead);
- every kustomization lists exactly the files of its folder;
- the Deployment is hardened, and its settings agree with the RBAC, the Service and the PDB;
- the namespaced overlay grants per namespace what the base grants cluster-wide;
- hadolint passes on the Dockerfile, whose final stage runs as a numeric user without HEALTHCHECK.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRDS = ROOT / "crds"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "namespaced"
EXAMPLES = DEPLOY / "examples"
DOCKERFILE = ROOT / "Dockerfile"
K8S_VERSION = "1.30"

# Tested elsewhere (promtool, dashboard tests).
NOT_HERE = (DEPLOY / "prometheus", DEPLOY / "grafana")
# Kinds that are not in the Kubernetes schemas: each is checked some other way or not at all.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("lucidgrant.dev/v1alpha1", "LucidGrant"),
}
NAMESPACE = "lucidgrant-system"

Doc = dict[str, Any]


# -- loading ------------------------------------------------------------------------------------


def _excluded(path: Path) -> bool:
    return any(path.is_relative_to(folder) for folder in NOT_HERE)


def kustomization_files() -> list[Path]:
    found = [*DEPLOY.rglob("kustomization.yaml"), *CRDS.glob("kustomization.yaml")]
    return sorted(p for p in found if not _excluded(p))


def patch_files() -> set[Path]:
    """Files a kustomization uses as patches: partial objects, not manifests."""
    patches: set[Path] = set()
    for kustomization in kustomization_files():
        data = load_one(kustomization)
        for patch in data.get("patches") or []:
            if "path" in patch:
                patches.add((kustomization.parent / patch["path"]).resolve())
    return patches


def load_one(path: Path) -> Doc:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def load_docs(path: Path) -> list[Doc]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def manifest_files() -> list[Path]:
    """Every manifest under deploy/ and crds/, but no kustomization, patch or file tested
    elsewhere."""
    patches = patch_files()
    files = [
        p
        for p in [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), *CRDS.glob("*.yaml")]
        if p.name != "kustomization.yaml" and not _excluded(p) and p.resolve() not in patches
    ]
    return sorted(files)


def manifests() -> Iterator[tuple[str, Doc]]:
    for path in manifest_files():
        for index, doc in enumerate(load_docs(path)):
            name = doc.get("metadata", {}).get("name", "?")
            yield f"{path.relative_to(ROOT)}#{index}:{doc.get('kind')}/{name}", doc


def find(docs: list[Doc], kind: str, name: str, namespace: str | None = None) -> Doc:
    matches = [
        d
        for d in docs
        if d.get("kind") == kind
        and d["metadata"]["name"] == name
        and d["metadata"].get("namespace") == namespace
    ]
    assert len(matches) == 1, f"expected one {kind} {namespace}/{name}, found {len(matches)}"
    return matches[0]


def base_docs() -> list[Doc]:
    kustomization = load_one(BASE / "kustomization.yaml")
    return [doc for entry in kustomization["resources"] for doc in load_docs(BASE / entry)]


def deployment() -> Doc:
    return find(base_docs(), "Deployment", "lucidgrant", NAMESPACE)


def container() -> Doc:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Doc = containers[0]
    return result


def env_of(c: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# -- (a) schemas --------------------------------------------------------------------------------

MANIFESTS = list(manifests())


def test_there_is_something_to_validate() -> None:
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    expected = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
    expected |= {"RoleBinding", "Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"}
    expected |= {"CustomResourceDefinition", "Secret", "LucidGrant", "Pod", "NetworkPolicy"}
    assert expected <= kinds, f"missing kinds: {expected - kinds}"


@pytest.mark.parametrize("doc", [d for _, d in MANIFESTS], ids=[i for i, _ in MANIFESTS])
def test_manifest_validates_against_kubernetes_schema(doc: Doc) -> None:
    if (doc.get("apiVersion"), doc.get("kind")) in CUSTOM_KINDS:
        return  # custom resources: see the CUSTOM_KINDS allowlist and the LucidGrant tests below
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata'].get('name')}: {exc.message}")


def test_schema_validation_catches_a_broken_deployment() -> None:
    """The check above can fail: an unknown field and a wrong type are caught."""
    broken = copy.deepcopy(deployment())
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(deployment())
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_only_allowlisted_custom_kinds() -> None:
    unknown = set()
    for _, doc in MANIFESTS:
        api_version, kind = doc["apiVersion"], doc["kind"]
        group = api_version.split("/")[0] if "/" in api_version else ""
        if (
            "." in group
            and not group.endswith(".k8s.io")
            and (api_version, kind) not in CUSTOM_KINDS
        ):
            unknown.add((api_version, kind))
    assert not unknown, f"custom kinds not on the allowlist: {unknown}"


def _strict(schema: Doc) -> Doc:
    """The CRD schema as JSON Schema that also rejects unknown fields (as `kubectl apply` with
    server-side field validation does); metadata stays open."""
    schema = copy.deepcopy(schema)

    def walk(node: Doc, top: bool) -> None:
        props = node.get("properties")
        if isinstance(props, dict):
            if "additionalProperties" not in node:
                node["additionalProperties"] = False
            for name, child in props.items():
                if not (top and name == "metadata"):
                    walk(child, False)
        if isinstance(node.get("items"), dict):
            walk(node["items"], False)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], False)

    walk(schema, True)
    return schema


def crd_schema() -> Doc:
    crd = load_one(CRDS / "lucidgrant.dev_lucidgrants.yaml")
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: Doc = version["schema"]["openAPIV3Schema"]
    return schema


def grant_errors(doc: Doc) -> list[str]:
    validator = jsonschema.Draft7Validator(_strict(crd_schema()))
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]
    # The CRD's CEL rule, by hand: exactly one authorization source.
    auth = doc.get("spec", {}).get("authorization")
    if auth is not None and ("refreshTokenSecretRef" in auth) == ("codeSecretRef" in auth):
        errors.append("spec.authorization: exactly one of refreshTokenSecretRef or codeSecretRef")
    return errors


EXAMPLE_GRANTS = [
    (str(path.relative_to(ROOT)), doc)
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in load_docs(path)
    if doc.get("kind") == "LucidGrant"
]


def test_examples_cover_both_authorization_sources() -> None:
    sources = {next(iter(doc["spec"]["authorization"])) for _, doc in EXAMPLE_GRANTS}
    assert sources == {"refreshTokenSecretRef", "codeSecretRef"}
    kinds = {doc["spec"].get("tokenKind", "user") for _, doc in EXAMPLE_GRANTS}
    assert kinds == {"user", "account"}


@pytest.mark.parametrize("doc", [d for _, d in EXAMPLE_GRANTS], ids=[i for i, _ in EXAMPLE_GRANTS])
def test_example_grant_matches_crd_schema(doc: Doc) -> None:
    assert doc["apiVersion"] == "lucidgrant.dev/v1alpha1"
    assert "namespace" not in doc["metadata"], "examples apply into the namespace given with -n"
    assert not grant_errors(doc)
    spec = doc["spec"]
    for required in ("clientSecretRef", "scopes", "accessTokenSecret", "authorization"):
        assert required in spec
    if "codeSecretRef" in spec["authorization"]:
        assert spec.get("redirectUri"), "a code exchange needs the redirect URI it was issued for"


def test_grant_schema_check_can_fail() -> None:
    good = EXAMPLE_GRANTS[0][1]
    mutations: list[Callable[[Doc], object]] = [
        lambda s: s.pop("scopes"),
        lambda s: s.update(tokenKind="robot"),
        lambda s: s.update(clientSecretRef={"name": "Not_A_Name"}),
        lambda s: s.update(refreshBefore="ten minutes"),
        lambda s: s.update(unknownField=1),
        lambda s: s["authorization"].update(
            codeSecretRef={"name": "c"}, refreshTokenSecretRef={"name": "r"}
        ),
        lambda s: s.update(authorization={}),
    ]
    for mutate in mutations:
        bad = copy.deepcopy(good)
        mutate(bad["spec"])
        assert grant_errors(bad), f"not caught: {bad['spec']}"


def test_example_secrets_reference_what_the_grants_use() -> None:
    secrets = {
        doc["metadata"]["name"]: doc
        for path in EXAMPLES.glob("*.yaml")
        for doc in load_docs(path)
        if doc["kind"] == "Secret"
    }
    for _, grant in EXAMPLE_GRANTS:
        spec = grant["spec"]
        client = secrets[spec["clientSecretRef"]["name"]]
        assert {"client_id", "client_secret"} <= set(client["stringData"])
        ((source, ref),) = spec["authorization"].items()
        default_key = {"refreshTokenSecretRef": "refresh_token", "codeSecretRef": "code"}[source]
        assert ref.get("key", default_key) in secrets[ref["name"]]["stringData"]
    for secret in secrets.values():
        for value in secret["stringData"].values():
            assert value.startswith("REPLACE_WITH_"), "examples hold placeholders only"
    (pod,) = [d for p in EXAMPLES.glob("*.yaml") for d in load_docs(p) if d["kind"] == "Pod"]
    mounted = {v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    consumers = {g["spec"]["accessTokenSecret"]["name"] for _, g in EXAMPLE_GRANTS}
    assert mounted & consumers
    for c in pod["spec"]["containers"]:
        assert not any("subPath" in m for m in c.get("volumeMounts", [])), "subPath never updates"


# -- (b) kustomizations -------------------------------------------------------------------------


def _referenced(folder: Path, entry: str) -> Path:
    target = (folder / entry).resolve()
    assert target.exists(), f"{folder}: {entry} does not exist"
    if target.is_dir():
        assert (target / "kustomization.yaml").is_file(), f"{entry}: folder without kustomization"
    return target


@pytest.mark.parametrize(
    "kustomization", kustomization_files(), ids=lambda p: str(p.relative_to(ROOT))
)
def test_kustomization_lists_exactly_its_files(kustomization: Path) -> None:
    folder = kustomization.parent
    data = load_one(kustomization)
    assert data.get("kind") == "Kustomization"
    resources = list(data.get("resources") or [])
    patches = [p["path"] for p in data.get("patches") or [] if "path" in p]
    assert resources, f"{kustomization}: no resources"
    assert len(set(resources)) == len(resources), f"{kustomization}: duplicate resources"
    used = {_referenced(folder, entry) for entry in [*resources, *patches]}
    own = {p.resolve() for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")]}
    own.discard(kustomization.resolve())
    assert own - used == set(), f"{kustomization}: files left out: {sorted(own - used)}"
    # A resource file must hold manifests; a patch is used as a patch only.
    assert not set(resources) & set(patches)


def test_root_kustomization_installs_everything() -> None:
    data = load_one(DEPLOY / "kustomization.yaml")
    resolved = {_referenced(DEPLOY, entry) for entry in data["resources"]}
    assert CRDS.resolve() in resolved
    assert BASE.resolve() in resolved
    # Created by the observability work; the install must carry the alerts.
    assert (DEPLOY / "prometheus" / "prometheusrule.yaml").resolve() in resolved
    assert load_one(CRDS / "kustomization.yaml")["resources"] == ["lucidgrant.dev_lucidgrants.yaml"]


# -- (c) the Deployment -------------------------------------------------------------------------


def test_deployment_is_hardened() -> None:
    dep = deployment()
    pod = dep["spec"]["template"]["spec"]
    c = container()
    psc, csc = pod["securityContext"], c["securityContext"]

    assert psc["runAsNonRoot"] is True and csc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 65532 and csc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc.get("privileged", False) is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in csc["capabilities"]

    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert c["image"] == "ghcr.io/lucidgrant/lucidgrant:0.1.0"

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "flow": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == "lucidgrant"
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def wal_volume_faults(pod: Doc) -> list[str]:
    """What is wrong with where a pod spec keeps the write-ahead log of refresh tokens: it must
    be an emptyDir in memory (kept across container restarts, never on the node's disk, gone
    with the pod), and nothing that outlives the pod may hold it (hostPath, a PVC, an ephemeral
    volume claim, a subPath of another volume)."""
    faults: list[str] = []
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in pod.get("containers") or []:
        wal = env_of(c).get("LUCIDGRANT_WAL_DIR")
        if wal is None:
            continue
        wal_dir = Path(wal)
        holding = [m for m in c.get("volumeMounts") or [] if wal_dir.is_relative_to(m["mountPath"])]
        if not holding:
            faults.append(f"{c['name']}: {wal} is on the image's filesystem")
            continue
        mount = max(holding, key=lambda m: len(m["mountPath"]))  # the innermost one holds it
        volume = volumes.get(mount["name"], {})
        if set(volume) != {"name", "emptyDir"}:
            faults.append(f"{c['name']}: {wal} is on {sorted(set(volume) - {'name'})}")
        elif volume["emptyDir"].get("medium") != "Memory":
            faults.append(f"{c['name']}: {wal} is an emptyDir on the node's disk")
        elif not volume["emptyDir"].get("sizeLimit"):
            faults.append(f"{c['name']}: {wal} is an emptyDir without a size limit")
        if mount.get("subPath") or mount.get("subPathExpr"):
            faults.append(f"{c['name']}: {wal} is a subPath of {mount['name']}")
    return faults


def rendered_pods() -> list[tuple[str, Doc]]:
    from tests.deploy.render import TARGETS, render

    return [
        (f"{target}:{doc['metadata']['name']}", doc["spec"]["template"]["spec"])
        for target, folder in TARGETS.items()
        for doc in render(folder)
        if doc["kind"] == "Deployment"
    ]


def test_the_write_ahead_log_is_in_memory_and_goes_with_the_pod() -> None:
    pods = rendered_pods()
    assert pods and all(
        "LUCIDGRANT_WAL_DIR" in env_of(c) for _, pod in pods for c in pod["containers"]
    )
    for where, pod in pods:
        assert not wal_volume_faults(pod), where


@pytest.mark.parametrize(
    "volume",
    [
        {"hostPath": {"path": "/var/lib/lucidgrant"}},
        {"persistentVolumeClaim": {"claimName": "wal"}},
        {"ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"emptyDir": {"sizeLimit": "8Mi"}},
        {"emptyDir": {"medium": "Memory"}},
    ],
    ids=["hostPath", "pvc", "ephemeral", "emptyDir-on-disk", "no-size-limit"],
)
def test_the_write_ahead_log_check_can_fail(volume: Doc) -> None:
    pod = copy.deepcopy(deployment()["spec"]["template"]["spec"])
    (wal,) = [v for v in pod["volumes"] if v["name"] == "wal"]
    wal.pop("emptyDir")
    wal.update(volume)
    assert wal_volume_faults(pod)
    unmounted = copy.deepcopy(deployment()["spec"]["template"]["spec"])
    (c,) = unmounted["containers"]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "wal"]
    (fault,) = wal_volume_faults(unmounted)
    assert fault.endswith("is on the image's filesystem")


def test_the_write_ahead_log_is_in_no_image_layer() -> None:
    """The log exists only in the mounted volume at run time: no Dockerfile instruction names
    its path, no VOLUME declares one (an anonymous volume would be on the node's disk), the
    build context is an allowlist, and no log file sits in what it allows."""
    from lucidgrant.wal import FILE_NAME

    wal_dir = str(env_of(container())["LUCIDGRANT_WAL_DIR"])
    parent = str(Path(wal_dir).parent)
    for stage in dockerfile_stages():
        for instruction, rest in stage:
            assert instruction != "VOLUME", rest
            assert parent not in rest and FILE_NAME not in rest, (instruction, rest)
    copied = [rest for stage in dockerfile_stages() for i, rest in stage if i in ("COPY", "ADD")]
    assert sorted(copied) == [
        "--from=builder /install /usr/local",
        "operator/ operator/",
        "pyproject.toml README.md ./",
    ]
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().split() if line[0] == "!"]
    assert sorted(allowed) == ["README.md", "operator/", "pyproject.toml"]
    assert not [p for p in (ROOT / "operator").rglob(f"{FILE_NAME}*")]


def test_deployment_high_availability() -> None:
    dep = deployment()
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    env = env_of(container())
    assert spec["replicas"] == 2
    assert env["LUCIDGRANT_LEADER_ELECTION"] == "true"
    strategy = spec["strategy"]
    assert strategy["type"] in ("RollingUpdate", "Recreate")
    if strategy["type"] == "RollingUpdate":
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    labels = pod_labels()
    spread = pod["topologySpreadConstraints"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" for t in spread)
    for t in spread:
        assert _matches(t["labelSelector"]["matchLabels"], labels)
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert _matches(anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"], labels)
    assert env["LUCIDGRANT_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_termination_grace_outlasts_shutdown_grace() -> None:
    from lucidgrant.config import Settings

    pod = deployment()["spec"]["template"]["spec"]
    env = env_of(container())
    shutdown_grace = float(env.get("LUCIDGRANT_SHUTDOWN_GRACE", Settings().shutdown_grace))
    assert shutdown_grace == 25
    assert pod["terminationGracePeriodSeconds"] == 40
    # SIGTERM waits the grace, then at most one Lucid call's deadline for an answer on its way.
    lucid_timeout = float(env.get("LUCIDGRANT_LUCID_TIMEOUT", Settings().lucid_timeout))
    assert pod["terminationGracePeriodSeconds"] > shutdown_grace + lucid_timeout
    assert int(env["LUCIDGRANT_HTTP_PORT"]) == 8080
    assert int(env["LUCIDGRANT_FLOW_PORT"]) == 8081


def test_deployment_runs_the_operator_on_all_namespaces() -> None:
    c = container()
    assert "command" not in c, "the image's ENTRYPOINT (lucidgrant) must stay"
    assert c["args"] == ["run", "--all-namespaces"]


def test_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container()["image"].rsplit(":", 1)[1] == version


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = deployment()["spec"]["template"]["metadata"]["labels"]
    return labels


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_selectors_find_the_operator_pods() -> None:
    docs = base_docs()
    labels = pod_labels()
    assert _matches(deployment()["spec"]["selector"]["matchLabels"], labels)
    service = find(docs, "Service", "lucidgrant", NAMESPACE)
    assert _matches(service["spec"]["selector"], labels)
    # The flow's Service (what an Ingress points at) carries no /metrics.
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("flow", 8081, "flow")
    ]
    metrics = find(docs, "Service", "lucidgrant-metrics", NAMESPACE)
    assert _matches(metrics["spec"]["selector"], labels)
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [
        ("metrics", 8080, "metrics")
    ]
    pdb = find(docs, "PodDisruptionBudget", "lucidgrant", NAMESPACE)
    assert _matches(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] == 1  # one of the two replicas may go at a time
    monitor = find(docs, "ServiceMonitor", "lucidgrant", NAMESPACE)
    assert _matches(monitor["spec"]["selector"]["matchLabels"], metrics["metadata"]["labels"])
    assert not _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The alert rules group by the grants' own `namespace` label.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_everything_lives_in_the_operator_namespace() -> None:
    for doc in base_docs():
        if doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
    find(base_docs(), "Namespace", NAMESPACE)
    find(base_docs(), "ServiceAccount", "lucidgrant", NAMESPACE)


# -- RBAC -----------------------------------------------------------------------------------------

Grant = tuple[str, str, str]  # (verb, group, resource)


def grants_of(rules: list[Doc]) -> set[Grant]:
    return {
        (verb, group, resource)
        for rule in rules
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}


def test_clusterrole_is_least_privilege() -> None:
    rbac = load_docs(BASE / "rbac.yaml")
    cluster_role = find(rbac, "ClusterRole", "lucidgrant")
    granted = grants_of(cluster_role["rules"])
    assert granted == {
        ("list", "lucidgrant.dev", "lucidgrants"),
        ("watch", "lucidgrant.dev", "lucidgrants"),
        ("patch", "lucidgrant.dev", "lucidgrants"),
        ("patch", "lucidgrant.dev", "lucidgrants/status"),
        # Asked by the OwnerReferencesPermissionEnforcement admission plugin (blockOwnerDeletion).
        ("update", "lucidgrant.dev", "lucidgrants/finalizers"),
        *{(v, "", "secrets") for v in ("get", "list", "watch", "create", "patch", "delete")},
        ("create", "", "events"),
        ("list", "apiextensions.k8s.io", "customresourcedefinitions"),
        ("watch", "apiextensions.k8s.io", "customresourcedefinitions"),
    }
    for rule in cluster_role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
    binding = find(rbac, "ClusterRoleBinding", "lucidgrant")
    assert binding["roleRef"]["name"] == "lucidgrant"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lucidgrant", "namespace": NAMESPACE}
    ]


def test_lease_role_is_namespaced_and_allows_every_shard_its_lease() -> None:
    rbac = load_docs(BASE / "rbac.yaml")
    role = find(rbac, "Role", "lucidgrant-leader-election", NAMESPACE)
    assert grants_of(role["rules"]) == {
        ("create", "coordination.k8s.io", "leases"),
        ("get", "coordination.k8s.io", "leases"),
        ("update", "coordination.k8s.io", "leases"),
    }
    # Shards set their own LUCIDGRANT_LEASE_NAME: a resourceNames list would make their Lease
    # calls 403, and the shard would never lead.
    assert not [rule for rule in role["rules"] if "resourceNames" in rule]
    binding = find(rbac, "RoleBinding", "lucidgrant-leader-election", NAMESPACE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "lucidgrant-leader-election",
    }
    assert not [d for d in rbac if d["kind"] == "ClusterRole" and "leases" in str(d["rules"])]


# -- the namespaced overlay -----------------------------------------------------------------------


def test_overlay_replaces_cluster_wide_secret_access() -> None:
    kustomization = load_one(OVERLAY / "kustomization.yaml")
    deleted = set()
    for patch in kustomization["patches"]:
        for doc in load_docs(OVERLAY / patch["path"]):
            if doc.get("$patch") == "delete":
                # The target exists in the base, so kustomize has something to delete.
                find(base_docs(), doc["kind"], doc["metadata"]["name"])
                deleted.add((doc["kind"], doc["metadata"]["name"]))
    assert deleted == {("ClusterRole", "lucidgrant"), ("ClusterRoleBinding", "lucidgrant")}

    (args_patch,) = [
        d
        for p in kustomization["patches"]
        for d in load_docs(OVERLAY / p["path"])
        if d["kind"] == "Deployment"
    ]
    find(base_docs(), "Deployment", args_patch["metadata"]["name"], NAMESPACE)
    (patched,) = args_patch["spec"]["template"]["spec"]["containers"]
    assert patched["name"] == container()["name"]
    args = patched["args"]
    assert args[0] == "run" and "--all-namespaces" not in args
    watched = {args[i + 1] for i, a in enumerate(args) if a == "--namespace"}
    assert watched == {"team-a", "team-b"}

    rbac = load_docs(OVERLAY / "namespaced-rbac.yaml")
    cluster_wide = grants_of(find(base_docs(), "ClusterRole", "lucidgrant")["rules"])
    namespaced = {g for g in cluster_wide if (g[1], g[2]) not in CLUSTER_SCOPED}
    roles = [d for d in rbac if d["kind"] == "Role" and d["metadata"]["namespace"] != NAMESPACE]
    assert {r["metadata"]["namespace"] for r in roles} == watched
    for role in roles:
        assert grants_of(role["rules"]) == namespaced
        binding = find(rbac, "RoleBinding", role["metadata"]["name"], role["metadata"]["namespace"])
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    cluster_roles = [d for d in rbac if d["kind"] == "ClusterRole"]
    for cluster_role in cluster_roles:
        for verb, group, resource in grants_of(cluster_role["rules"]):
            assert (group, resource) in CLUSTER_SCOPED and verb in ("list", "watch")


def test_overlay_lets_the_web_flow_keep_its_key_and_nothing_else() -> None:
    """The web flow reads (or first creates) its HMAC key Secret in the operator's namespace;
    in the namespaced install nothing else there is readable."""
    from lucidgrant.authstate import STATE_KEY_SECRET

    rbac = load_docs(OVERLAY / "namespaced-rbac.yaml")
    own = [d for d in rbac if d["kind"] == "Role" and d["metadata"]["namespace"] == NAMESPACE]
    assert len(own) == 1
    rules = {(tuple(r["verbs"]), tuple(r.get("resourceNames", []))) for r in own[0]["rules"]}
    assert rules == {(("get",), (STATE_KEY_SECRET,)), (("create",), ())}
    assert grants_of(own[0]["rules"]) == {("get", "", "secrets"), ("create", "", "secrets")}
    binding = find(rbac, "RoleBinding", own[0]["metadata"]["name"], NAMESPACE)
    assert binding["roleRef"]["name"] == own[0]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lucidgrant", "namespace": NAMESPACE}
    ]


# -- (d, e) the Dockerfile ------------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "hadolint"
    assert exe.exists(), f"hadolint not found next to {sys.executable}"
    return subprocess.run(
        [str(exe), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kopf\nUSER root\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Each stage's (instruction, arguments), comments and line continuations removed."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        assert stages, f"{instruction} before the first FROM"
        stages[-1].append((instruction, " ".join(rest.split())))
    return stages


def test_dockerfile_base_is_pinned_by_digest() -> None:
    stages = dockerfile_stages()
    (base, alias) = re.fullmatch(r"(\S+) AS (\w+)", stages[0][0][1]).groups()  # type: ignore[union-attr]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    # Every later stage builds on that one pinned image, never on a tag of its own.
    for stage in stages[1:]:
        assert stage[0][1].split()[0] == alias, stage[0]


def test_dockerfile_final_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 3, "the pinned base, a builder, the final image"
    final = stages[-1]
    instructions = [i for i, _ in final]
    users = [rest for i, rest in final if i == "USER"]
    assert users and re.fullmatch(r"\d+(:\d+)?", users[-1]), f"numeric USER, not {users}"
    assert users[-1].split(":")[0] != "0"
    assert instructions.index("USER") > max(i for i, x in enumerate(instructions) if x == "RUN")
    assert "HEALTHCHECK" not in [i for s in stages for i, _ in s]
    assert ("ENTRYPOINT", '["lucidgrant"]') in final
    assert ("CMD", '["run", "--all-namespaces"]') in final
    assert ("EXPOSE", "8080 8081") in final
    env = " ".join(rest for i, rest in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    # Only what the builder installed comes in; the final stage itself installs nothing.
    assert ("COPY", "--from=builder /install /usr/local") in final
    for forbidden in ("apt-get", "pip install", "pip wheel", "gcc", "COPY . "):
        assert not any(forbidden in rest for _, rest in final), forbidden
    builder = next(s for s in stages if s[0][1].endswith(" AS builder"))
    assert any("pip install" in rest and "--prefix=/install" in rest for _, rest in builder)


def test_dockerfile_final_stage_has_no_installer_and_no_shell() -> None:
    (run,) = [rest for i, rest in dockerfile_stages()[-1] if i == "RUN"]
    removed = set(run.replace("&&", " ").split())
    site = "/usr/local/lib/python3.11/site-packages"
    for path in (
        "/usr/local/bin/pip*",
        f"{site}/pip",
        f"{site}/setuptools",
        f"{site}/wheel",
        "/usr/local/lib/python3.11/ensurepip",
    ):
        assert path in removed, path
    for shell in ("sh", "dash", "bash"):
        # Debian bookworm merged /bin into /usr/bin; both names go, whichever is the link.
        assert f"/bin/{shell}" in removed and f"/usr/bin/{shell}" in removed, shell


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    assert {"!pyproject.toml", "!README.md", "!operator/"} <= set(lines)


# -- NetworkPolicy ---------------------------------------------------------------------------------


def test_network_policy_in_from_flow_and_prometheus_out_to_dns_and_https() -> None:
    policy = find(base_docs(), "NetworkPolicy", "lucidgrant", NAMESPACE)
    spec = policy["spec"]
    assert _matches(spec["podSelector"]["matchLabels"], pod_labels())
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    container_ports = {p["name"] for p in container()["ports"]}
    for rule in spec["ingress"]:
        assert rule["from"], "every ingress rule names its peers"
        for port in rule["ports"]:
            assert port["port"] in container_ports and port["protocol"] == "TCP"
    peers = [peer for rule in spec["ingress"] for peer in rule["from"]]
    assert not [p for p in peers if "ipBlock" in p], "peers by namespace and pod, not address"
    namespaces = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers
    }
    assert namespaces == {"ingress-nginx", "monitoring"}
    # Each peer reaches its own port: the ingress controller the flow, Prometheus /metrics.
    port_of = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: {
            port["port"] for port in rule["ports"]
        }
        for rule in spec["ingress"]
        for peer in rule["from"]
    }
    assert port_of == {"ingress-nginx": {"flow"}, "monitoring": {"metrics"}}
    allowed_out = {
        (port["port"], port["protocol"]) for rule in spec["egress"] for port in rule["ports"]
    }
    assert allowed_out == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")}
    (dns,) = [rule for rule in spec["egress"] if "to" in rule]
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


# -- rendering (what `make lint` hands to checkov) -------------------------------------------------


def test_render_applies_the_overlay_as_kustomize_would() -> None:
    from tests.deploy.render import TARGETS, render

    cluster = {(d["kind"], d["metadata"]["name"]) for d in render(TARGETS["deploy.yaml"])}
    namespaced_docs = render(TARGETS["namespaced.yaml"])
    namespaced = {(d["kind"], d["metadata"]["name"]) for d in namespaced_docs}
    assert ("ClusterRole", "lucidgrant") in cluster
    assert ("ClusterRole", "lucidgrant") not in namespaced
    assert ("ClusterRoleBinding", "lucidgrant") not in namespaced
    assert ("Role", "lucidgrant-state-key") in namespaced
    assert ("NetworkPolicy", "lucidgrant") in cluster & namespaced
    assert ("CustomResourceDefinition", "lucidgrants.lucidgrant.dev") in cluster & namespaced
    (dep,) = [d for d in namespaced_docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["run", "--namespace", "team-a", "--namespace", "team-b"]
    # The strategic merge keeps everything the patch does not name.
    assert c["image"] == container()["image"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert dep["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lucidgrant"


def test_render_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    from tests.deploy.render import render

    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamespace: elsewhere\n")
    with pytest.raises(ValueError, match="namespace"):
        render(tmp_path)


def test_checkov_skips_carry_a_reason_checkov_can_parse() -> None:
    """checkov reads `checkov.io/skipN: CKV_ID=reason` and splits on '='."""
    skips = [
        value
        for _, doc in MANIFESTS
        for key, value in (doc.get("metadata", {}).get("annotations") or {}).items()
        if key.startswith("checkov.io/skip")
    ]
    assert skips
    for value in skips:
        check, reason = value.split("=")
        assert re.fullmatch(r"CKV2?_K8S_\d+", check) and len(reason.split()) >= 5, value


def test_make_lint_hands_every_rendered_file_to_checkov() -> None:
    """checkov skips a missing -f silently: the Makefile must name exactly what render writes."""
    from tests.deploy.render import TARGETS

    makefile = (ROOT / "Makefile").read_text()
    named = set(re.findall(r"-f \$\(RENDERED\)/(\S+)", makefile))
    assert named == set(TARGETS)

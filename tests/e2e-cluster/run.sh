#!/usr/bin/env bash
# End to end on a real Kubernetes cluster (kind): builds the image, deploys the operator with
# kustomize and the Lucid emulator beside it, then checks one rotation and one re-authorization.
# Prints PASS or FAIL and deletes the cluster (KEEP_CLUSTER=1 keeps it).
#
#   tests/e2e-cluster/run.sh            # the whole run (needs docker, kind, kubectl)
#   tests/e2e-cluster/run.sh --render   # only print the manifests it would apply
#
# Never run by `make test` (no cluster there); see tests/e2e-cluster/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${CLUSTER:-lucidgrant-e2e}"
# The tag deploy/base/deployment.yaml uses, so that the loaded image is the one that runs.
IMAGE="${IMAGE:-ghcr.io/lucidgrant/lucidgrant:0.1.0}"
# The Lucid emulator's image (testbed/Dockerfile): the operator's image has no emulator in it.
EMULATOR_IMAGE="${EMULATOR_IMAGE:-lucidgrant-testbed:e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
OPERATOR_NS=lucidgrant-system
EMULATOR_NS=lucid-emulator
GRANT_NS=lucidgrant-e2e
GRANT=e2e
CLIENT_ID=demo
CLIENT_SECRET=demo-secret
ACCESS_TTL=120 # seconds: a refresh every ~80 s (refreshBefore is capped at a third of it)

WORK="$(mktemp -d)"
CLUSTER_CREATED=0

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The kustomization this run applies: the CRD and the operator's base from this checkout, the
# emulator, the operator pointed at the emulator. The ServiceMonitor is left out (kind has no
# Prometheus Operator CRDs), and so is the PrometheusRule.
render_kustomization() {
    local dir="$WORK/kustomize"
    mkdir -p "$dir"
    # kustomize takes no absolute paths and no parent folder of the kustomization: symlinks.
    ln -s "$ROOT/crds" "$dir/crds"
    ln -s "$ROOT/deploy/base" "$dir/base"
    cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - crds
  - base
  - emulator.yaml
patches:
  - path: operator-env.yaml
  - patch: |-
      \$patch: delete
      apiVersion: monitoring.coreos.com/v1
      kind: ServiceMonitor
      metadata:
        name: lucidgrant
        namespace: $OPERATOR_NS
EOF
    cat >"$dir/operator-env.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: lucidgrant
  namespace: $OPERATOR_NS
spec:
  template:
    spec:
      containers:
        - name: operator
          imagePullPolicy: Never
          env:
            - name: LUCIDGRANT_LUCID_API_URL
              value: http://lucid-emulator.$EMULATOR_NS.svc:8080
            - name: LUCIDGRANT_LUCID_APP_URL
              value: http://lucid-emulator.$EMULATOR_NS.svc:8080
EOF
    cat >"$dir/emulator.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $EMULATOR_NS
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: lucid-emulator
  namespace: $EMULATOR_NS
spec:
  replicas: 1
  selector:
    matchLabels: {app: lucid-emulator}
  template:
    metadata:
      labels: {app: lucid-emulator}
    spec:
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: emulator
          image: $EMULATOR_IMAGE
          imagePullPolicy: Never
          args:
            - --host=0.0.0.0
            - --port=8080
            - --access-ttl=$ACCESS_TTL
            - --refresh-ttl=3600
            - --client=$CLIENT_ID:$CLIENT_SECRET
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /_emulator/stats, port: http}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - {name: tmp, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata:
  name: lucid-emulator
  namespace: $EMULATOR_NS
spec:
  selector: {app: lucid-emulator}
  ports:
    - {name: http, port: 8080, targetPort: http}
EOF
    printf '%s\n' "$dir"
}

# emulator PATH [JSON-BODY [FIELD]]: call the emulator's control API from inside its pod (the
# image has Python; nothing but kubectl is needed here). Prints the answer, or one field of it.
emulator() {
    kubectl -n "$EMULATOR_NS" exec deploy/lucid-emulator -- python -c '
import json, sys, urllib.request
path, body, field = (sys.argv[1:] + ["", ""])[:3]
request = urllib.request.Request(
    "http://127.0.0.1:8080" + path,
    data=body.encode() if body else None,
    headers={"Content-Type": "application/json"},
    method="POST" if body else "GET",
)
answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
print(answer[field] if field else json.dumps(answer))
' "$@"
}

# grant_manifest NAME BOOTSTRAP TOKEN_SECRET REFRESH_TOKEN [SPEC_LINE]: a bootstrap Secret and
# a LucidGrant using it (in namespace $NS, default $GRANT_NS), as YAML on stdout (piped to
# kubectl: no token in a process list).
grant_manifest() {
    cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $2
  namespace: ${NS:-$GRANT_NS}
  labels: {lucidgrant.dev/role: client} # marked, or the operator does not read it
stringData: {refresh_token: "$4"}
---
apiVersion: lucidgrant.dev/v1alpha1
kind: LucidGrant
metadata: {name: $1, namespace: ${NS:-$GRANT_NS}}
spec:
  clientSecretRef: {name: lucid-oauth-client}
  scopes: [lucidchart.document.content:readonly, offline_access]
  authorization:
    refreshTokenSecretRef: {name: $2}
  accessTokenSecret: {name: $3}
  ${5:-}
EOF
}

client_secret() { # client_secret NAMESPACE: the client Secret's manifest, marked for lucidgrant
    cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: lucid-oauth-client
  namespace: $1
  labels: {lucidgrant.dev/role: client}
stringData: {client_id: $CLIENT_ID, client_secret: $CLIENT_SECRET}
EOF
}

grant_field() { # grant_field JSONPATH [NAME]: of grant NAME (default $GRANT)
    kubectl -n "$GRANT_NS" get lucidgrant "${2:-$GRANT}" -o "jsonpath=$1"
}

ready_reason_is() { # ready_reason_is NAME REASON
    [[ "$(grant_field '{.status.conditions[?(@.type=="Ready")].reason}' "$1")" == "$2" ]]
}

secret_exists() { # secret_exists NAME
    kubectl -n "$GRANT_NS" get secret "$1" >/dev/null 2>&1
}

issue_grant() { # a refresh token of a new grant at the emulator, as if a person authorized
    emulator /_emulator/grants \
        "{\"client_id\": \"$CLIENT_ID\", \"scopes\": [\"lucidchart.document.content:readonly\", \"offline_access\"]}" \
        refresh_token
}

secret_field() { # secret_field SECRET KEY: the decoded value
    kubectl -n "$GRANT_NS" get secret "$1" -o "jsonpath={.data.$2}" | base64 -d
}

# wait_until SECONDS DESCRIPTION COMMAND...: retry COMMAND every 2 s until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@"; do
        if ((SECONDS >= deadline)); then
            log "timed out waiting for: $what"
            return 1
        fi
        sleep 2
    done
}

refreshed_since() { # refreshed_since TIME: lastRefreshTime is set and differs from TIME
    local now
    now="$(grant_field '{.status.lastRefreshTime}')"
    [[ -n "$now" && "$now" != "$1" ]]
}

token_changed_from() { # token_changed_from TOKEN: lucid-token holds another access token
    local now
    now="$(secret_field lucid-token access_token)"
    [[ -n "$now" && "$now" != "$1" ]]
}

diagnostics() {
    log "diagnostics"
    kubectl -n "$GRANT_NS" get lucidgrant "$GRANT" -o yaml || true
    kubectl -n "$GRANT_NS" get events --sort-by=.lastTimestamp || true
    kubectl -n "$OPERATOR_NS" get pods -o wide || true
    kubectl -n "$OPERATOR_NS" get lease lucidgrant-leader -o yaml || true
    kubectl -n "$OPERATOR_NS" logs -l app.kubernetes.io/name=lucidgrant --tail=200 \
        --prefix || true
    emulator /_emulator/stats || true
}

finish() {
    local rc=$?
    trap - EXIT
    if ((rc == 0)); then
        echo "PASS"
    else
        if ((CLUSTER_CREATED)); then
            diagnostics >&2
        fi
        echo "FAIL"
    fi
    if ((CLUSTER_CREATED)) && [[ "$KEEP_CLUSTER" != 1 ]]; then
        kind delete cluster --name "$CLUSTER" || true
    elif ((CLUSTER_CREATED)); then
        log "cluster kept: kind delete cluster --name $CLUSTER"
    fi
    rm -rf "$WORK"
    exit "$rc"
}

main() {
    local tool
    for tool in docker kind kubectl; do
        command -v "$tool" >/dev/null || {
            log "$tool is required"
            return 1
        }
    done

    log "creating kind cluster $CLUSTER"
    kind create cluster --name "$CLUSTER" --wait 120s
    CLUSTER_CREATED=1
    kubectl config use-context "kind-$CLUSTER" >/dev/null

    log "building $IMAGE"
    # The Dockerfile bind-mounts the builder's wheels (RUN --mount): BuildKit.
    DOCKER_BUILDKIT=1 docker build -t "$IMAGE" "$ROOT"
    kind load docker-image "$IMAGE" --name "$CLUSTER"
    log "building $EMULATOR_IMAGE"
    docker build -f "$ROOT/testbed/Dockerfile" -t "$EMULATOR_IMAGE" "$ROOT"
    kind load docker-image "$EMULATOR_IMAGE" --name "$CLUSTER"

    log "deploying the operator and the Lucid emulator"
    local dir
    dir="$(render_kustomization)"
    kubectl apply -k "$dir"
    kubectl wait --for=condition=Established --timeout=60s crd/lucidgrants.lucidgrant.dev
    kubectl -n "$EMULATOR_NS" rollout status deploy/lucid-emulator --timeout=180s
    kubectl -n "$OPERATOR_NS" rollout status deploy/lucidgrant --timeout=180s

    log "issuing a grant at the emulator (as if a person had authorized)"
    local refresh_token
    refresh_token="$(issue_grant)"
    [[ -n "$refresh_token" ]]

    log "creating the client Secret, the bootstrap Secret and the LucidGrant"
    kubectl create namespace "$GRANT_NS"
    # Through stdin, so that no token shows up in a process list.
    client_secret "$GRANT_NS" | kubectl apply -f -
    grant_manifest "$GRANT" lucid-bootstrap lucid-token "$refresh_token" | kubectl apply -f -

    log "waiting for Ready"
    kubectl -n "$GRANT_NS" wait --for=condition=Ready --timeout=180s "lucidgrant/$GRANT"
    local first_refresh first_token
    first_refresh="$(grant_field '{.status.lastRefreshTime}')"
    first_token="$(secret_field lucid-token access_token)"
    [[ -n "$first_refresh" && -n "$first_token" ]]
    log "Ready; last refresh at $first_refresh"

    log "waiting for a rotation (access tokens live ${ACCESS_TTL}s)"
    wait_until $((ACCESS_TTL * 3)) "a rotation" refreshed_since "$first_refresh"
    log "rotated at $(grant_field '{.status.lastRefreshTime}')"
    wait_until 30 "the new access token in lucid-token" token_changed_from "$first_token"
    local invalid_grants
    invalid_grants="$(emulator /_emulator/stats '' invalid_grant_count)"
    [[ "$invalid_grants" == 0 ]] || {
        log "the emulator answered invalid_grant $invalid_grants times"
        return 1
    }
    [[ "$(grant_field '{.status.conditions[?(@.type=="ReauthorizationRequired")].status}')" != True ]]
    check_consumer_secret_comes_back

    log "revoking the grant at the emulator"
    emulator /_emulator/revoke "{\"token\": \"$refresh_token\"}" >/dev/null
    # Refresh now instead of at the next due time; the operator removes the annotation.
    kubectl -n "$GRANT_NS" annotate --overwrite "lucidgrant/$GRANT" \
        "lucidgrant.dev/refresh-now=$(date +%s)"
    kubectl -n "$GRANT_NS" wait --for=condition=ReauthorizationRequired=True --timeout=300s \
        "lucidgrant/$GRANT"
    local reason
    reason="$(grant_field '{.status.conditions[?(@.type=="ReauthorizationRequired")].reason}')"
    log "ReauthorizationRequired=True, reason $reason"

    check_rbac
    check_long_name_and_foreground_revoke
    check_refused_labels_are_invalid_spec
    check_kubectl_sees_the_schema
    check_namespace_deletion_revokes
}

# The rules tests/e2e enforces on the emulated API server (docs/real-server.md), asked of the
# real one: what the operator's ServiceAccount may do (tests/e2e/test_rbac.py,
# test_real_server.py), and no more than that.
check_rbac() {
    local sa="system:serviceaccount:$OPERATOR_NS:lucidgrant" check
    log "checking the operator's RBAC as $sa"
    for check in \
        "list lucidgrants.lucidgrant.dev --all-namespaces" \
        "watch lucidgrants.lucidgrant.dev --all-namespaces" \
        "list secrets --all-namespaces" \
        "patch lucidgrants.lucidgrant.dev -n $GRANT_NS" \
        "patch lucidgrants.lucidgrant.dev --subresource=status -n $GRANT_NS" \
        "update lucidgrants.lucidgrant.dev --subresource=finalizers -n $GRANT_NS" \
        "create secrets -n $GRANT_NS" \
        "patch secrets -n $GRANT_NS" \
        "delete secrets -n $GRANT_NS" \
        "create events -n $GRANT_NS" \
        "get leases.coordination.k8s.io/lucidgrant-shard-a -n $OPERATOR_NS"; do
        # shellcheck disable=SC2086 # each check is a verb, a resource and flags
        kubectl auth can-i --as="$sa" $check >/dev/null || {
            log "RBAC denies what the operator needs: $check"
            return 1
        }
    done
    for check in "update secrets -n $GRANT_NS" "create leases.coordination.k8s.io -n default"; do
        # shellcheck disable=SC2086
        if kubectl auth can-i --as="$sa" $check >/dev/null; then
            log "RBAC allows more than the operator needs: $check"
            return 1
        fi
    done
}

# A grant whose name is too long for a label value becomes Ready; deleted with Foreground
# propagation (Argo CD's prune) it is still revoked at Lucid (test_real_server.py).
check_long_name_and_foreground_revoke() {
    local name refresh_token
    name="long-$(printf 'n%.0s' {1..60})"
    log "a grant named with ${#name} characters, deletionPolicy Revoke"
    refresh_token="$(issue_grant)"
    grant_manifest "$name" long-bootstrap long-token "$refresh_token" "deletionPolicy: Revoke" |
        kubectl apply -f -
    kubectl -n "$GRANT_NS" wait --for=condition=Ready --timeout=180s "lucidgrant/$name"
    local secret label annotation
    for secret in "$name-lucidgrant-state" long-token; do
        label="$(kubectl -n "$GRANT_NS" get secret "$secret" \
            -o 'jsonpath={.metadata.labels.lucidgrant\.dev/grant}')"
        annotation="$(kubectl -n "$GRANT_NS" get secret "$secret" \
            -o 'jsonpath={.metadata.annotations.lucidgrant\.dev/grant-name}')"
        [[ "$annotation" == "$name" && -n "$label" && ${#label} -le 63 ]] || {
            log "Secret $secret: label $label, annotation $annotation"
            return 1
        }
    done
    log "deleting it with --cascade=foreground"
    kubectl -n "$GRANT_NS" delete --cascade=foreground --timeout=120s "lucidgrant/$name"
    [[ "$(emulator /_emulator/lookup "{\"token\": \"$refresh_token\"}" revoked)" == True ]] || {
        log "the grant was not revoked at Lucid"
        return 1
    }
}

# A deleted consumer Secret is written again (test_real_server.py: within the re-list interval
# even when the watch never said DELETED; here the watch may well say it).
check_consumer_secret_comes_back() {
    log "deleting the consumer Secret lucid-token"
    kubectl -n "$GRANT_NS" delete secret lucid-token
    wait_until 330 "lucid-token written again (LUCIDGRANT_RESYNC_INTERVAL 300 s)" \
        secret_exists lucid-token
}

# Labels the API server refuses on the consumer Secret are InvalidSpec naming the field
# (test_consumer_labels_the_server_refuses_are_an_invalid_spec).
check_refused_labels_are_invalid_spec() {
    local name=bad-labels refresh_token message
    log "a grant whose accessTokenSecret.labels the server refuses"
    refresh_token="$(issue_grant)"
    grant_manifest "$name" bad-labels-bootstrap bad-labels-token "$refresh_token" |
        kubectl apply -f -
    kubectl -n "$GRANT_NS" patch "lucidgrant/$name" --type merge \
        -p '{"spec": {"accessTokenSecret": {"labels": {"a": "-x"}}}}'
    wait_until 120 "Ready=False InvalidSpec" ready_reason_is "$name" InvalidSpec
    message="$(grant_field '{.status.conditions[?(@.type=="Ready")].message}' "$name")"
    [[ "$message" == *spec.accessTokenSecret.labels* ]] || {
        log "InvalidSpec does not name spec.accessTokenSecret.labels: $message"
        return 1
    }
    kubectl -n "$GRANT_NS" delete "lucidgrant/$name" --timeout=120s
}

# What tests/testbed/test_kube_real_rules.py asks of the emulated server, asked of this one:
# kubectl's Strict field validation refuses an unknown field, `kubectl get` prints the CRD's
# printer columns and no <invalid> (no date column in the future), `kubectl explain` reads the
# OpenAPI v3 document.
check_kubectl_sees_the_schema() {
    local out
    log "kubectl: strict field validation, printer columns, explain"
    if out="$(grant_manifest strict strict-bootstrap strict-token unused 'bogusField: 1' |
        kubectl apply -f - 2>&1)"; then
        log "an unknown field was accepted: $out"
        return 1
    fi
    [[ "$out" == *'strict decoding error: unknown field "spec.bogusField"'* ]] || {
        log "unexpected refusal: $out"
        return 1
    }
    out="$(kubectl -n "$GRANT_NS" get lucidgrants)"
    log "$out"
    [[ "$out" == *READY*REASON*REAUTH*ACCESS-EXPIRES*REFRESH-EXPIRES*AGE* ]] || return 1
    [[ "$out" != *'<invalid>'* ]] || return 1
    kubectl explain lucidgrant.spec.clientSecretRef | grep -q 'Name of the Secret'
}

# Deleting the namespace of a grant with deletionPolicy Revoke: revoked at Lucid, or the operator
# says loudly that it could not, the client Secret having gone with the namespace
# (test_namespace_deletion_still_revokes).
check_namespace_deletion_revokes() {
    local ns=lucidgrant-e2e-gone refresh_token
    log "deleting the namespace of a grant with deletionPolicy Revoke"
    kubectl create namespace "$ns"
    client_secret "$ns" | kubectl apply -f -
    refresh_token="$(issue_grant)"
    NS="$ns" grant_manifest doomed doomed-bootstrap doomed-token "$refresh_token" \
        'deletionPolicy: Revoke' | kubectl apply -f -
    kubectl -n "$ns" wait --for=condition=Ready --timeout=180s lucidgrant/doomed
    kubectl delete namespace "$ns" --timeout=180s
    [[ "$(emulator /_emulator/lookup "{\"token\": \"$refresh_token\"}" revoked)" == True ]] ||
        kubectl -n "$OPERATOR_NS" logs -l app.kubernetes.io/name=lucidgrant --tail=500 |
        grep -q 'NOT revoked at Lucid' || {
            log "neither revoked at Lucid nor said so"
            return 1
        }
}

if [[ "${1:-}" == "--render" ]]; then
    trap 'rm -rf "$WORK"' EXIT
    kubectl kustomize "$(render_kustomization)"
    exit 0
fi
trap finish EXIT
main

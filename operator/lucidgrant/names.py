"""The names the operator shares with the API server and with people: the resource's group,
version and plural, API paths, labels, annotations, the finalizer, condition types and reasons.

They live here, and only here, because each is a contract: a renamed annotation strands every
grant already stored under the old one, and a path typed twice drifts. This module imports
nothing from the package, so every other module may import it."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from urllib.parse import quote, unquote

GROUP = "lucidgrant.dev"
VERSION = "v1alpha1"
PLURAL = "lucidgrants"
KIND = "LucidGrant"
API_VERSION = f"{GROUP}/{VERSION}"

# -- API paths ------------------------------------------------------------------------------


def grants_path(namespace: str | None = None) -> str:
    """The LucidGrant collection: in one namespace, or across all (namespace None)."""
    if namespace is None:
        return f"/apis/{GROUP}/{VERSION}/{PLURAL}"
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"


def grant_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"{grants_path(namespace)}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


def secret_path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
    return base if name is None else f"{base}/{quote(name)}"


def secret_of_path(path: str) -> tuple[str, str] | None:
    """(namespace, name) of the Secret a `secret_path` names, else None."""
    parts = [unquote(p) for p in path.split("/")]
    if len(parts) == 7 and parts[:4] == ["", "api", "v1", "namespaces"] and parts[5] == "secrets":
        return parts[4], parts[6]
    return None


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"


def lease_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"
    return base if name is None else f"{base}/{quote(name)}"


# -- Secrets the operator owns ------------------------------------------------------------------

STATE_SUFFIX = "-lucidgrant-state"


def grant_label(grant_name: str) -> str:
    """LABEL_GRANT's value: the grant's name, or for a name beyond the 63 characters a label
    value may hold, its start and a hash of the whole (ANN_GRANT has the full name)."""
    if len(grant_name) <= LABEL_VALUE_MAX:
        return grant_name
    digest = hashlib.sha256(grant_name.encode()).hexdigest()[:10]
    return f"{grant_name[: LABEL_VALUE_MAX - 11].rstrip('-.')}-{digest}"


def state_secret_name(grant_name: str) -> str:
    """The operator-owned Secret holding a grant's refresh token, lock and stored facts."""
    return f"{grant_name}{STATE_SUFFIX}"


# Every Secret the operator reads carries this label, and its Secret watch selects on it
# (SECRET_SELECTOR): other Secrets never reach the process, so its memory does not grow with
# the cluster's. One key for all, since a label selector cannot OR two keys.
LABEL_ROLE = "lucidgrant.dev/role"
# On a client or bootstrap Secret, set by a person: lets the operator read it. Nothing in an
# unmarked Secret is read, so a grant cannot name a database password as its client id.
ROLE_CLIENT = "client"
ROLE_STATE = "state"
# On the access-token Secrets the operator writes; a person sets it, with LABEL_GRANT, on an
# existing Secret to let one grant write into it.
ROLE_ACCESS_TOKEN = "access-token"
ROLE_KEY = "key"  # the web flow's key Secret, read by name, not watched
WATCHED_ROLES = (ROLE_CLIENT, ROLE_STATE, ROLE_ACCESS_TOKEN)
SECRET_SELECTOR = f"{LABEL_ROLE} in ({','.join(WATCHED_ROLES)})"
LABEL_GRANT = "lucidgrant.dev/grant"
LABEL_VALUE_MAX = 63  # the API server refuses longer label values (422)
LABEL_APP = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

# Keys of the state Secret's data.
KEY_REFRESH = "refresh_token"
KEY_ACCESS = "access_token"

# -- annotations ----------------------------------------------------------------------------

_A = "lucidgrant.dev/"
# On a grant, set by a person (or `kubectl lucidgrant refresh`): refresh now, then removed.
REFRESH_NOW = _A + "refresh-now"
# On the state Secret: the single-flight lock and the non-secret facts of the stored grant.
ANN_LOCK_HOLDER = _A + "lock-holder"
ANN_LOCK_UNTIL = _A + "lock-until"
ANN_ACCESS_EXPIRES = _A + "access-expires-at"
ANN_ACCESS_LIFETIME = _A + "access-lifetime"
ANN_REFRESH_EXPIRES = _A + "refresh-expires-at"
ANN_REFRESH_SOURCE = _A + "refresh-expiry-source"
ANN_REFRESH_LIFETIME = _A + "refresh-lifetime"
ANN_SCOPES = _A + "scopes"
ANN_USER_ID = _A + "user-id"
ANN_ACCOUNT_ID = _A + "account-id"
ANN_TOKEN_TYPE = _A + "token-type"
ANN_BOOTSTRAP = _A + "bootstrap-digest"
ANN_DEAD = _A + "reauthorization-reason"
ANN_LAST_REFRESH = _A + "last-refresh"
# When Lucid was asked for the stored refresh token, written with every stored rotation (partial
# answers too): the write-ahead log's replay never stores an older rotation over a newer one.
ANN_ROTATED_AT = _A + "rotated-at"
ANN_CONSUMER = _A + "consumer-secret"
# The web flow's used states (authstate.record_use), on the state Secret.
ANN_USED_STATES = _A + "used-states"
# On the state and consumer Secrets: the grant's full name (LABEL_GRANT may hold a short form).
ANN_GRANT = _A + "grant-name"

# Only grants with deletionPolicy Revoke carry it: something must happen before they go.
FINALIZER = _A + "revoke"

# -- conditions -----------------------------------------------------------------------------

READY = "Ready"
REAUTH = "ReauthorizationRequired"


class Reason(StrEnum):
    """Every reason a condition, an event or a metric label can carry.

    Whether a person must act, and whether the grant is dead (no more refreshes), is decided
    here and nowhere else: status, metrics, events and the kubectl plugin ask the member."""

    # Ready=True
    REFRESHED = "Refreshed"
    # Ready=False: the operator keeps trying, nobody needs to act (or must fix a Secret).
    ACCESS_TOKEN_EXPIRED = "AccessTokenExpired"
    PROVIDER_UNAVAILABLE = "ProviderUnavailable"
    CLIENT_REJECTED = "ClientRejected"
    MISSING_SECRET = "MissingSecret"
    SECRET_CONFLICT = "SecretConflict"
    SECRET_NOT_MARKED = "SecretNotMarked"
    SUSPENDED = "Suspended"
    INVALID_SPEC = "InvalidSpec"
    KUBERNETES_UNAVAILABLE = "KubernetesUnavailable"
    # ReauthorizationRequired=False
    AUTHORIZED = "Authorized"
    # ReauthorizationRequired=True
    AWAITING_AUTHORIZATION = "AwaitingAuthorization"
    INVALID_GRANT = "InvalidGrant"
    REFRESH_TOKEN_EXPIRED = "RefreshTokenExpired"
    SCOPES_REJECTED = "ScopesRejected"
    SCOPES_CHANGED = "ScopesChanged"

    @property
    def needs_person(self) -> bool:
        """Only a person authorizing in a browser can clear it (ReauthorizationRequired)."""
        return self in _NEEDS_PERSON

    @property
    def fatal(self) -> bool:
        """The grant is unusable: no refresh is tried and its access token is not live.
        ScopesChanged needs a person too, but the grant keeps working with its old scopes."""
        return self.needs_person and self is not Reason.SCOPES_CHANGED

    @classmethod
    def of(cls, text: str) -> Reason | None:
        """The member for a reason read back from the API server; None for one we never write."""
        try:
            return cls(text)
        except ValueError:
            return None


_NEEDS_PERSON = frozenset(
    {
        Reason.AWAITING_AUTHORIZATION,
        Reason.INVALID_GRANT,
        Reason.REFRESH_TOKEN_EXPIRED,
        Reason.SCOPES_REJECTED,
        Reason.SCOPES_CHANGED,
    }
)
REAUTH_REASONS: tuple[Reason, ...] = tuple(r for r in Reason if r.needs_person)

# Events that are not condition reasons.
EVENT_REFRESH_FAILING = "RefreshFailing"
EVENT_RECOVERED = "Recovered"
EVENT_AUTHORIZATION_REFUSED = "AuthorizationRefused"

"""The grant model: a LucidGrant's spec parsed and validated into plain values.

The checks mirror the CRD schema (and its CEL rule) so that a grant written before the schema
was installed, or into a cluster that does not enforce CEL, is reported in status rather than
acted on wrongly."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

OFFLINE_ACCESS = "offline_access"
DEFAULT_REFRESH_BEFORE = 600.0

_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# The API server's rules for label and annotation keys (qualified names) and label values
# (apimachinery api/validate/content/kube.go): a Secret that breaks them is refused with 422.
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_MAX = 63
_ANNOTATIONS_MAX = 256 * 1024
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class SpecError(ValueError):
    """A spec that cannot be acted on; `path` names the field as the API server would."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class ConsumerSecret:
    name: str
    access_token_key: str = "access_token"
    expires_at_key: str = "expires_at"
    token_type_key: str = "token_type"
    authorization_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    client_secret_name: str
    client_id_key: str
    client_secret_key: str
    token_kind: Literal["user", "account"]
    scopes: tuple[str, ...]
    consumer: ConsumerSecret
    redirect_uri: str | None = None
    refresh_token_ref: SecretKeyRef | None = None
    code_ref: SecretKeyRef | None = None
    refresh_before: float = DEFAULT_REFRESH_BEFORE
    suspend: bool = False
    deletion_policy: Literal["Retain", "Revoke"] = "Retain"

    @property
    def bootstrap_ref(self) -> SecretKeyRef | None:
        return self.refresh_token_ref or self.code_ref

    @property
    def requested_scopes(self) -> tuple[str, ...]:
        """The scopes to ask Lucid for: the spec's, plus offline_access (no refresh token
        without it)."""
        extra = () if OFFLINE_ACCESS in self.scopes else (OFFLINE_ACCESS,)
        return self.scopes + extra


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0. Go-style units ms, s, m, h (what the CRD's pattern admits)."""
    if not _DURATION.match(text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 10m, 1h30m)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """5400.0 -> '1h30m', as spec.refreshBefore is written (whole seconds)."""
    rest = round(seconds)
    parts = [(rest // 3600, "h"), (rest % 3600 // 60, "m"), (rest % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _obj(value: Any, path: str, *, required: bool = True) -> Mapping[str, Any] | None:
    if value is None:
        if required:
            raise SpecError(path, "Required value")
        return None
    if not isinstance(value, Mapping):
        raise SpecError(path, f'Invalid value: "{type(value).__name__}": must be an object')
    return value


def _str(
    obj: Mapping[str, Any], key: str, path: str, pattern: re.Pattern[str], default: str | None
) -> str:
    value = obj.get(key, default)
    if value is None:
        raise SpecError(f"{path}.{key}", "Required value")
    if not isinstance(value, str) or not pattern.match(value):
        raise SpecError(f"{path}.{key}", f"Invalid value: {value!r}: must match {pattern.pattern}")
    return value


def _ref(obj: Mapping[str, Any] | None, path: str, default_key: str) -> SecretKeyRef | None:
    if obj is None:
        return None
    return SecretKeyRef(
        name=_str(obj, "name", path, _DNS_NAME, None),
        key=_str(obj, "key", path, _SECRET_KEY, default_key),
    )


def _string_map(value: Any, path: str) -> dict[str, str]:
    mapping = _obj(value, path, required=False) or {}
    for k, v in mapping.items():
        if not isinstance(v, str):
            raise SpecError(f"{path}.{k}", "Invalid value: must be a string")
    return dict(mapping)


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if "/" in prefix or (slash and not (len(prefix) <= 253 and _DNS_NAME.match(prefix))):
        return "the prefix before '/' must be a DNS subdomain such as example.com"
    if len(name) > _LABEL_VALUE_MAX or not _QUALIFIED_NAME.match(name):
        return (
            "the name must be at most 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _metadata_map(value: Any, path: str, *, labels: bool) -> dict[str, str]:
    """Labels or annotations for a Secret, refused here as the API server would refuse them."""
    mapping = _string_map(value, path)
    for key, text in mapping.items():
        # Annotation keys are checked in lower case (objectmeta.go ValidateAnnotations).
        problem = _qualified_name_problem(key if labels else key.lower())
        if (
            problem is None
            and labels
            and text
            and not (len(text) <= _LABEL_VALUE_MAX and _QUALIFIED_NAME.match(text))
        ):
            key, problem = (
                text,
                (
                    "a label value must be empty or at most 63 characters of letters, digits, "
                    "'-', '_' or '.', starting and ending with a letter or digit"
                ),
            )
        if problem is not None:
            raise SpecError(path, f"Invalid value: {key!r}: {problem}")
    if not labels and sum(len(k) + len(v) for k, v in mapping.items()) > _ANNOTATIONS_MAX:
        raise SpecError(path, f"Too long: must have at most {_ANNOTATIONS_MAX} bytes in all")
    return mapping


def _consumer(spec: Mapping[str, Any]) -> ConsumerSecret:
    path = "spec.accessTokenSecret"
    obj = _obj(spec.get("accessTokenSecret"), path)
    assert obj is not None
    keys = _obj(obj.get("keys"), f"{path}.keys", required=False) or {}
    kpath = f"{path}.keys"
    auth = keys.get("authorizationHeader")
    consumer = ConsumerSecret(
        name=_str(obj, "name", path, _DNS_NAME, None),
        access_token_key=_str(keys, "accessToken", kpath, _SECRET_KEY, "access_token"),
        expires_at_key=_str(keys, "expiresAt", kpath, _SECRET_KEY, "expires_at"),
        token_type_key=_str(keys, "tokenType", kpath, _SECRET_KEY, "token_type"),
        authorization_key=None
        if auth is None
        else _str(keys, "authorizationHeader", kpath, _SECRET_KEY, None),
        labels=_metadata_map(obj.get("labels"), f"{path}.labels", labels=True),
        annotations=_metadata_map(obj.get("annotations"), f"{path}.annotations", labels=False),
    )
    names = [
        consumer.access_token_key,
        consumer.expires_at_key,
        consumer.token_type_key,
        *([consumer.authorization_key] if consumer.authorization_key else []),
    ]
    if len(set(names)) != len(names):
        raise SpecError(kpath, "Invalid value: key names must be distinct")
    return consumer


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError("spec.scopes", "Required value: at least one scope")
    for i, scope in enumerate(value):
        if not isinstance(scope, str) or not re.match(r"^[A-Za-z0-9_.:-]+$", scope):
            raise SpecError(f"spec.scopes[{i}]", f"Invalid value: {scope!r}")
    return tuple(value)


def _refresh_before(text: Any) -> float:
    path = "spec.refreshBefore"
    try:
        before = parse_duration(text) if isinstance(text, str) else None
    except ValueError:
        before = None
    if before is None:
        raise SpecError(
            path, f"Invalid value: {text!r}: must be a duration such as 10m, 90s or 1h30m"
        )
    if before <= 0:
        raise SpecError(
            path,
            f"Invalid value: {text!r}: must be above zero: the operator refreshes when the "
            "access token has less than this left, so zero would let every token expire "
            "before its refresh; use e.g. 10m",
        )
    return before


def parse_spec(spec: Any) -> GrantSpec:
    """Validate and default a LucidGrant spec; raise SpecError naming the first bad field."""
    obj = _obj(spec, "spec")
    assert obj is not None
    client = _obj(obj.get("clientSecretRef"), "spec.clientSecretRef")
    assert client is not None
    auth = _obj(obj.get("authorization"), "spec.authorization", required=False) or {}
    refresh_ref = _ref(
        _obj(
            auth.get("refreshTokenSecretRef"),
            "spec.authorization.refreshTokenSecretRef",
            required=False,
        ),
        "spec.authorization.refreshTokenSecretRef",
        "refresh_token",
    )
    code_ref = _ref(
        _obj(auth.get("codeSecretRef"), "spec.authorization.codeSecretRef", required=False),
        "spec.authorization.codeSecretRef",
        "code",
    )
    if obj.get("authorization") is not None and (refresh_ref is None) == (code_ref is None):
        raise SpecError(
            "spec.authorization",
            "Invalid value: exactly one of refreshTokenSecretRef or codeSecretRef must be set",
        )
    kind = obj.get("tokenKind", "user")
    if kind not in ("user", "account"):
        raise SpecError(
            "spec.tokenKind", f'Unsupported value: "{kind}": supported values: "user", "account"'
        )
    policy = obj.get("deletionPolicy", "Retain")
    if policy not in ("Retain", "Revoke"):
        raise SpecError(
            "spec.deletionPolicy",
            f'Unsupported value: "{policy}": supported values: "Retain", "Revoke"',
        )
    redirect = obj.get("redirectUri")
    if redirect is not None and (
        not isinstance(redirect, str) or not re.match(r"^https?://\S+$", redirect)
    ):
        raise SpecError("spec.redirectUri", "Invalid value: must be an http(s) URL")
    if code_ref is not None and redirect is None:
        raise SpecError(
            "spec.redirectUri", "Required value: needed to exchange an authorization code"
        )
    before = _refresh_before(obj.get("refreshBefore", "10m"))
    suspend = obj.get("suspend", False)
    if not isinstance(suspend, bool):
        raise SpecError("spec.suspend", "Invalid value: must be a boolean")
    return GrantSpec(
        client_secret_name=_str(client, "name", "spec.clientSecretRef", _DNS_NAME, None),
        client_id_key=_str(client, "clientIdKey", "spec.clientSecretRef", _SECRET_KEY, "client_id"),
        client_secret_key=_str(
            client, "clientSecretKey", "spec.clientSecretRef", _SECRET_KEY, "client_secret"
        ),
        token_kind=kind,
        scopes=_scopes(obj.get("scopes")),
        consumer=_consumer(obj),
        redirect_uri=redirect,
        refresh_token_ref=refresh_ref,
        code_ref=code_ref,
        refresh_before=before,
        suspend=suspend,
        deletion_policy=policy,
    )

"""What a person's browser sees in either authorization flow (the operator-hosted one,
authflow.py, and the laptop's, cli/authorize.py): Lucid's authorize URL, the small HTML pages
with their headers, and Lucid's authorization errors in the operator's words. Every piece of
text is escaped here, so no request value reaches a page unescaped."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Literal
from urllib.parse import quote, urlencode

from aiohttp import web

# OAuth 2.0 authorization error codes (RFC 6749, 4.1.2.1, and Lucid's invalid_scopes), told in
# the operator's words; any other value of `error` is not repeated.
LUCID_ERRORS = {
    "access_denied": "the person declined on Lucid's page, or may not grant this access",
    "invalid_scope": "Lucid refused the requested scopes",
    "invalid_scopes": "Lucid refused the requested scopes",
    "unauthorized_client": "Lucid does not let this OAuth client ask for it",
    "invalid_request": "Lucid found the request malformed",
    "unsupported_response_type": "Lucid found the request malformed",
    "server_error": "Lucid failed; try again shortly",
    "temporarily_unavailable": "Lucid is unavailable; try again shortly",
}


def lucid_error_text(error: str) -> str:
    explained = LUCID_ERRORS.get(error)
    return (
        f"Lucid did not grant access: {error} ({explained})."
        if explained
        else ("Lucid did not grant access.")
    )


def authorize_url(
    app_url: str,
    token_kind: Literal["user", "account"],
    client_id: str,
    redirect_uri: str,
    scopes: Iterable[str],
    state: str,
) -> str:
    """Lucid's authorize page for a grant (user or account token), always under `app_url`."""
    path = "/oauth2/authorize" if token_kind == "user" else "/oauth2/authorizeAccount"
    query = urlencode(
        {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
            "response_type": "code",
            "prompt": "consent",
        },
        quote_via=quote,
    )
    return f"{app_url.rstrip('/')}{path}?{query}"


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}h1{font-size:1.4rem}code{background:#f3f3f3;padding:0 .2rem}"
)
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def page(status: int, title: str, *paragraphs: str) -> web.Response:
    """A small HTML page; every piece of text is escaped here, so callers pass plain text."""
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    text = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(
        status=status, text=text, content_type="text/html", charset="utf-8", headers=HEADERS
    )


def refused(status: int, why: str, *more: str) -> web.Response:
    return page(
        status,
        "Authorization not completed",
        why,
        *more,
        "Nothing was changed. Start again from the grant's authorization link.",
    )


def nothing_here() -> web.Response:
    """The one answer for every grant that does not await a person here, whether it exists or
    not, works or not: strangers learn nothing from it."""
    return page(
        404,
        "No authorization waiting",
        "No grant awaits authorization at this link. Links are in the status of a LucidGrant "
        "that needs a person (status.authorizationURL).",
        "To replace a working grant on purpose, run kubectl lucidgrant authorize NAME -n "
        "NAMESPACE.",
    )


def too_many(wait: float) -> web.Response:
    seconds = max(1, math.ceil(wait))
    response = page(429, "Too many requests", f"Try again in {seconds} seconds.")
    response.headers["Retry-After"] = str(seconds)
    return response

"""The Lucid emulator's HTTP answers that are not token logic: JSON and HTML responses, the
authorize pages and redirects, and reading request bodies."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from yarl import URL

from lucidgrant_testbed.lucid.state import Kind

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

MAINTENANCE_PAGE = (
    "<!DOCTYPE html><html><head><title>Lucid is down for maintenance</title></head>"
    "<body><h1>We'll be back soon</h1><p>Lucid is undergoing scheduled maintenance.</p>"
    "</body></html>"
)
ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>Error</title></head>"
    "<body><h1>Something went wrong</h1></body></html>"
)


def json_answer(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def html_answer(status: int, page: str) -> web.Response:
    return web.Response(status=status, text=page, content_type="text/html")


def error_page(message: str) -> web.Response:
    page = (
        "<!DOCTYPE html><html><head><title>Authorization error</title></head>"
        f"<body><h1>Authorization error</h1><p>{html.escape(message)}</p></body></html>"
    )
    return html_answer(400, page)


def redirect(redirect_uri: str, state: str | None, **params: str) -> web.Response:
    if state is not None:
        params["state"] = state
    location = str(URL(redirect_uri).update_query(params))
    return web.Response(status=302, headers={"Location": location})


def consent_page(query: Mapping[str, str], kind: Kind) -> web.Response:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(query.get(name, ""))}">'
        for name in ("client_id", "redirect_uri", "scope", "state")
    )
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in query.get("scope", "").split())
    page = (
        "<!DOCTYPE html><html><head><title>Authorize application</title></head><body>"
        f"<h1>Allow {html.escape(query.get('client_id', ''))} to access your Lucid "
        f"{kind}?</h1><ul>{scopes}</ul>"
        f'<form method="post" action="/oauth2/authorize/consent">{hidden}'
        f'<input type="hidden" name="kind" value="{kind}">'
        '<button type="submit" name="decision" value="approve">Approve</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form></body></html>"
    )
    return html_answer(200, page)


async def read_fields(request: web.Request) -> dict[str, str] | None:
    """The string fields of a JSON or form body; None when the body is neither."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        return {key: value for key, value in form.items() if isinstance(value, str)}
    try:
        data = json.loads(await request.text())
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return {key: value for key, value in data.items() if isinstance(value, str)}


async def read_control(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

"""An emulator of Lucid's OAuth 2.0 endpoints (authorize pages, token, introspect, revoke) with
switchable faults and short token lifetimes, so that tests, the demo and the benchmark can run
many rotations per minute on loopback. Where it differs from the real Lucid: docs/testing.md.

- `state`: clients, codes, grants and the OAuth rules over them, without HTTP;
- `faults`: the switches (outage, failed, slow, flaky, partial answers);
- `pages`: the HTTP answers and pages that are not token logic;
- `server`: `LucidEmulator`, the aiohttp server and its `/_emulator/` control API;
- `cli`: the command line (`python -m lucidgrant_testbed.lucid`).
"""

from lucidgrant_testbed.lucid.faults import TRUNCATED_JSON, FailureBody, Faults
from lucidgrant_testbed.lucid.pages import ERROR_PAGE, MAINTENANCE_PAGE
from lucidgrant_testbed.lucid.server import LucidEmulator
from lucidgrant_testbed.lucid.state import (
    ACCESS_PREFIX,
    CODE_PREFIX,
    DISABLED_CLIENT,
    INVALID_CLIENT,
    INVALID_CODE,
    INVALID_GRANT,
    REFRESH_PREFIX,
    GrantInfo,
    Kind,
    RefreshRecord,
    Subject,
)

__all__ = [
    "ACCESS_PREFIX",
    "CODE_PREFIX",
    "DISABLED_CLIENT",
    "ERROR_PAGE",
    "INVALID_CLIENT",
    "INVALID_CODE",
    "INVALID_GRANT",
    "MAINTENANCE_PAGE",
    "REFRESH_PREFIX",
    "TRUNCATED_JSON",
    "FailureBody",
    "Faults",
    "GrantInfo",
    "Kind",
    "LucidEmulator",
    "RefreshRecord",
    "Subject",
]

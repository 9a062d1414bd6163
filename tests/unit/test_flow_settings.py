"""The web flow's settings: only an https:// external URL, header names and rates that parse."""

from __future__ import annotations

import pytest

from lucidgrant.config import Settings, SettingsError


@pytest.mark.parametrize(
    "url",
    [
        "http://ops.example.com/lucidgrant",
        "ops.example.com",
        "https://",
        "https://ops.example.com/?next=x",
        "javascript:alert(1)",
    ],
)
def test_an_external_url_that_is_not_https_is_refused(url):
    with pytest.raises(SettingsError, match=r"LUCIDGRANT_EXTERNAL_URL=.*https://"):
        Settings.from_env({"LUCIDGRANT_EXTERNAL_URL": url})


def test_the_flow_settings_parse():
    settings = Settings.from_env(
        {
            "LUCIDGRANT_EXTERNAL_URL": "https://ops.example.com/lucidgrant",
            "LUCIDGRANT_FLOW_PORT": "9443",
            "LUCIDGRANT_FLOW_CLIENT_RATE": "2.5",
            "LUCIDGRANT_FLOW_USER_HEADER": "X-Auth-Request-Email",
            "LUCIDGRANT_HEADER_TIMEOUT": "3",
        }
    )
    assert settings.external_url == "https://ops.example.com/lucidgrant"
    assert (settings.flow_port, settings.flow_client_rate) == (9443, 2.5)
    assert (settings.flow_user_header, settings.header_timeout) == ("X-Auth-Request-Email", 3.0)
    assert Settings().flow_user_header is None  # no header is trusted unless configured


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LUCIDGRANT_FLOW_USER_HEADER", "X-User: admin", "header name"),
        ("LUCIDGRANT_FLOW_GRANT_RATE", "0", "requests a minute"),
        ("LUCIDGRANT_IDLE_TIMEOUT", "-1", "seconds above 0"),
        ("LUCIDGRANT_FLOW_MAX_CONNECTIONS", "0", "1 or more"),
    ],
)
def test_bad_flow_settings_name_the_variable_and_the_fix(name, value, says):
    with pytest.raises(SettingsError, match=f"{name}=.*{says}"):
        Settings.from_env({name: value})

"""Ids, labels and URLs are printable text: one holding a NUL, a bidi override or a space is
refused 400 and stored nowhere. On PostgreSQL a NUL reached the database and was a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_http_commands import Api


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    made = Api(db_url)
    yield made
    made.client.__exit__(None, None, None)
    made.ledger.close()


def auth(api: Api, role: str = "operator") -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[role]}"}


@pytest.mark.parametrize("path", ["/v1/tokens/a%00b", "/v1/webhooks/we_%00", "/v1/webhooks/dead/we_1/a%00b/retry"])
def test_a_control_character_in_an_id_of_the_url_is_refused_400(api: Api, path: str) -> None:
    method = api.client.post if path.endswith("/retry") else api.client.delete
    response = method(path, headers=auth(api))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert "\x00" not in response.text


def test_a_bidi_override_in_a_workspace_id_is_refused_and_never_echoed(api: Api) -> None:
    response = api.client.get("/v1/workspaces/%E2%80%AEacme", headers=auth(api, "admin"))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert "\u202e" not in response.json()["detail"] and "\\u202e" in response.json()["detail"]


@pytest.mark.parametrize("label", ["a\u0000b", "a\u202eb", "line\nbreak", "\x1b[31mred"])
def test_a_token_label_is_one_line_of_printable_text(api: Api, label: str) -> None:
    before = len(api.app.state.tokens.list())
    response = api.client.post("/v1/tokens", json={"role": "support", "label": label}, headers=auth(api))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert len(api.app.state.tokens.list()) == before


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://0.0.0.0/",
                                 "http://2852039166/", "http://0xa9fea9fe/", "http://169.254.169.254./",
                                 "http://[::ffff:169.254.169.254]/", "http://0/", "http://169.254.43518/",
                                 "http://0xa9.0xfe.0xa9.0xfe/", "http://169.0xfe.169.254/", "http://169.16689662/",
                                 "http://0.0:8080/", "http://0251.0376.0251.0376/", "http://[fd00:ec2::254]/",
                                 "http://[fd00:ec2:0::254]/latest/meta-data", "http://100.100.100.200/",
                                 "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/",
                                 "http://[64:ff9b:1::a9fe:a9fe]/", "http://[::169.254.169.254]/",
                                 "http://[::ffff:0:169.254.169.254]/",
                                 "https://exa mple.com/", "https://example.com/\u0000"])
def test_a_webhook_target_is_a_plain_url_never_a_metadata_service(api: Api, url: str) -> None:
    response = api.client.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=auth(api))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request"), response.text
    assert api.client.get("/v1/webhooks", headers=auth(api)).json()["data"] == []


def test_a_webhook_s_event_types_are_refused_in_words_an_api_caller_gives(api: Api) -> None:
    """The refusal named the command line's `--events` flag to an HTTP caller."""
    response = api.client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "events": [""]}, headers=auth(api))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert response.json()["detail"] == "the events to send are '*' alone or a list of event types"

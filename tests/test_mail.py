"""Mails are plain text: what a person typed (a token name, a source) reaches them as typed, unescaped.

portal/text_templates.py renders every ``.txt`` template without HTML escaping; each kind of mail is sent
here the way the portal sends it.
"""

import json

import pytest
from django.core.management import call_command

from tokens.alerts import send_pending

from .helpers import bearer

pytestmark = pytest.mark.django_db

NAME = "R&D <ops> \"nightly\" 'build'"
ESCAPES = ("&amp;", "&lt;", "&gt;", "&quot;", "&#x27;", "&#39;")


def assert_plain(message):
    for text in (message.subject, message.body):
        assert not any(escape in text for escape in ESCAPES), text


def test_a_self_rotation_mail_names_the_token_as_typed(client, user, issue, mailoutbox):
    _token, value = issue(user, name=NAME)
    assert client.generic("POST", "/api/tokens/self/rotate", **bearer(value)).status_code == 201
    [message] = mailoutbox
    assert NAME in message.subject and NAME in message.body
    assert_plain(message)


def test_a_new_address_alert_names_the_token_as_typed(client, user, issue, mailoutbox):
    _token, value = issue(user, name=NAME)
    client.get("/api/users/me", REMOTE_ADDR="192.0.2.1", HTTP_USER_AGENT="R&D-agent <1>", **bearer(value))
    send_pending()
    [message] = mailoutbox
    assert NAME in message.subject and NAME in message.body
    assert "R&D-agent <1>" in message.body
    assert_plain(message)


def test_a_leak_report_mail_names_the_token_and_the_source_as_typed(client, user, issue, mailoutbox):
    _token, value = issue(user, name=NAME)
    body = {"credentials": [value], "source": "Q&A <forum>", "url": "https://paste.example/?a=1&b=2"}
    client.post("/api/credentials/revoke", json.dumps(body), content_type="application/json")
    [message] = mailoutbox
    assert NAME in message.subject and NAME in message.body
    assert "Q&A <forum>" in message.body and "https://paste.example/?a=1&b=2" in message.body
    assert_plain(message)


def test_an_expiry_notice_names_the_tokens_as_typed(user, issue, mailoutbox):
    issue(user, name=NAME, days=1)
    issue(user, name="Tom & Jerry", days=2)
    call_command("notify_expiring_tokens", stdout=None)
    [message] = mailoutbox
    assert NAME in message.body and "Tom & Jerry" in message.body
    assert_plain(message)

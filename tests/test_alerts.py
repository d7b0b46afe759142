"""New-address alerts: the request path writes the event, ``send_alerts`` mails it (tokens/alerts.py)."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens.alerts import send_pending
from tokens.models import AlertDelivery, LegacyApiKey, SitePolicy, Token, TokenEvent
from tokens.models.alerts import ALERTS_PER_DAY

from .helpers import _snapshot, bearer

pytestmark = pytest.mark.django_db


def use(client, value, ip, agent="curl/8.5"):
    response = client.get("/api/users/me", REMOTE_ADDR=ip, HTTP_USER_AGENT=agent, **bearer(value))
    assert response.status_code == 200
    return response


def new_address_events(token):
    return list(TokenEvent.objects.filter(token=token, kind=TokenEvent.Kind.NEW_ADDRESS).order_by("pk"))


def test_a_new_address_produces_one_alert_and_a_known_one_none(client, issued, mailoutbox):
    token, value = issued
    use(client, value, "192.0.2.1")
    use(client, value, "192.0.2.1")
    use(client, value, "198.51.100.20", agent="evil-scraper/1.0")
    use(client, value, "192.0.2.1")  # known, though not the last one
    use(client, value, "198.51.100.20")

    assert [(e.ip, e.detail) for e in new_address_events(token)] == [
        ("192.0.2.1", "curl/8.5"),
        ("198.51.100.20", "evil-scraper/1.0"),
    ]
    assert mailoutbox == []  # nothing is mailed on the request path
    send_pending()
    assert len(mailoutbox) == 2
    mail = mailoutbox[1]
    assert mail.to == ["alice@example.com"]
    assert "198.51.100.20" in mail.subject and token.name in mail.subject
    page = f"/profile/integrations/authorizations/{token.pk}/"
    for expected in ("198.51.100.20", "evil-scraper/1.0", page):
        assert expected in mail.body
    assert value not in mail.body
    send_pending()
    assert len(mailoutbox) == 2  # each event is mailed once


def test_a_request_from_the_last_used_address_costs_no_query_for_alerts(client, issued):
    _token, value = issued
    use(client, value, "192.0.2.1")
    with CaptureQueriesContext(connection) as queries:
        use(client, value, "192.0.2.1")
    assert not [q for q in queries if "tokens_clientaddress" in q["sql"] or "tokens_tokenevent" in q["sql"]]


def test_a_legacy_key_used_from_a_new_address_is_alerted_too(client, user, mailoutbox):
    key, _ = LegacyApiKey.objects.import_key(user=user, key="legacy-alert-key-0123456789")
    client.get("/api/users/me", REMOTE_ADDR="192.0.2.9", HTTP_REST_API_KEY="legacy-alert-key-0123456789")
    events = TokenEvent.objects.filter(legacy_key=key, kind=TokenEvent.Kind.NEW_ADDRESS)
    assert list(events.values_list("ip", flat=True)) == ["192.0.2.9"]
    send_pending()
    [mail] = mailoutbox
    assert f"#{key.pk}" in mail.body and "legacy-alert-key-0123456789" not in mail.body


def test_at_most_five_alert_mails_per_token_a_day(client, issued, user, issue, mailoutbox):
    _token, value = issued
    for i in range(ALERTS_PER_DAY + 3):
        use(client, value, f"192.0.2.{i + 1}")
    _other, other_value = issue(user, name="other")
    use(client, other_value, "192.0.2.200")

    report = send_pending()

    assert len(mailoutbox) == ALERTS_PER_DAY + 1  # five for the busy token, one for the other
    assert report.outcomes == {
        AlertDelivery.Outcome.SENT: ALERTS_PER_DAY + 1,
        AlertDelivery.Outcome.CAPPED: 3,
    }
    # Once those mails are a day old, the token may alert again.
    AlertDelivery.objects.update(at=timezone.now() - timedelta(days=1, minutes=1))
    use(client, value, "192.0.2.100")
    send_pending()
    assert len(mailoutbox) == ALERTS_PER_DAY + 2


def test_a_muted_token_and_the_policy_switch_send_no_alert(client, user, issue, mailoutbox):
    muted, muted_value = issue(user, name="muted")
    client.force_login(user)
    response = client.patch(f"/api/tokens/{muted.pk}", {"alerts": False}, content_type="application/json")
    assert response.status_code == 200 and response.json()["alerts"] is False
    client.logout()
    use(client, muted_value, "192.0.2.50")
    send_pending()
    assert mailoutbox == []

    _loud, loud_value = issue(user, name="loud")
    policy = SitePolicy.load()
    policy.new_address_alerts = False
    policy.save()
    use(client, loud_value, "192.0.2.51")
    send_pending()
    assert mailoutbox == []
    assert set(AlertDelivery.objects.values_list("outcome", flat=True)) == {"muted", "off"}


def test_the_owner_mutes_and_unmutes_alerts_on_the_token_page(client, user, issue):
    token, _value = issue(user)
    client.force_login(user)
    response = client.post(f"/profile/integrations/authorizations/{token.pk}/alerts/")
    assert response.status_code == 303
    token.refresh_from_db()
    assert token.alerts is False
    page = client.get(f"/profile/integrations/authorizations/{token.pk}/").content.decode()
    assert "Alerts are muted." in page
    client.post(f"/profile/integrations/authorizations/{token.pk}/alerts/", {"alerts": "on"})
    token.refresh_from_db()
    assert token.alerts is True
    changes = token.events.filter(kind="alerts_changed").order_by("pk")
    assert list(changes.values_list("detail", flat=True)) == ["off", "on"]


def test_patch_refuses_a_non_boolean_alerts_value_and_changes_nothing(client, issued):
    token, value = issued
    for bad in ("false", 0, None, [], {"a": 1}):
        response = client.patch(
            f"/api/tokens/{token.pk}",
            {"alerts": bad, "name": "new name"},
            content_type="application/json",
            **bearer(value),
        )
        assert response.status_code == 400 and "alerts" in response.json()["fields"]
    token.refresh_from_db()
    assert (token.alerts, token.name) == (True, "ci")


def test_send_alerts_runs_once_for_cron_and_as_a_loop(client, issued, mailoutbox, capsys):
    _token, value = issued
    use(client, value, "192.0.2.1")
    call_command("send_alerts")
    assert len(mailoutbox) == 1
    use(client, value, "192.0.2.2")
    call_command("send_alerts", "--loop", "--interval", "0.01", "--rounds", "2")
    assert len(mailoutbox) == 2
    out = capsys.readouterr().out
    assert "New-address alerts: 1 sent." in out and "nothing new" in out


def test_a_bearer_token_cannot_mute_alerts_but_may_switch_them_on(client, user, issue):
    token, value = issue(user)
    before = _snapshot(tokens_only=True)
    refused = client.patch(
        f"/api/tokens/{token.pk}",
        {"alerts": False, "name": "quiet"},
        content_type="application/json",
        **bearer(value),
    )
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert refused["WWW-Authenticate"].startswith('Bearer realm="api", error="insufficient_scope"')
    assert _snapshot(tokens_only=True) == before  # neither muted nor renamed
    # A legacy key is no browser session either.
    LegacyApiKey.objects.import_key(user=user, key="legacy-mute-key-0123456789")
    by_key = client.patch(
        f"/api/tokens/{token.pk}",
        {"alerts": False},
        content_type="application/json",
        HTTP_REST_API_KEY="legacy-mute-key-0123456789",
    )
    assert by_key.status_code == 403 and Token.objects.get(pk=token.pk).alerts is True
    # The owner's session mutes; a token may switch alerts back on (that takes nothing away from anyone).
    client.force_login(user)
    assert (
        client.patch(
            f"/api/tokens/{token.pk}", {"alerts": False}, content_type="application/json"
        ).status_code
        == 200
    )
    client.logout()
    on = client.patch(
        f"/api/tokens/{token.pk}", {"alerts": True}, content_type="application/json", **bearer(value)
    )
    assert on.status_code == 200 and on.json()["alerts"] is True


def test_an_alert_owed_for_a_use_before_the_mute_is_still_sent(client, user, issue, mailoutbox):
    token, value = issue(user)
    use(client, value, "198.51.100.66", agent="thief/1.0")  # the thief's first use
    client.force_login(user)  # muted before the sender runs (by the owner, or by a stolen session)
    assert (
        client.patch(
            f"/api/tokens/{token.pk}", {"alerts": False}, content_type="application/json"
        ).status_code
        == 200
    )
    client.logout()
    use(client, value, "198.51.100.67")  # after the mute: muted

    send_pending()

    [mail] = mailoutbox
    assert "198.51.100.66" in mail.subject and "thief/1.0" in mail.body
    outcomes = dict(AlertDelivery.objects.values_list("event__ip", "outcome"))
    assert outcomes == {"198.51.100.66": "sent", "198.51.100.67": "muted"}

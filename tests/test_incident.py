"""Incident response endpoints: reporting leaked credentials, and the event feed (tokens/api/incident.py)."""

import json
import threading

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from tokens.api import incident
from tokens.models import LegacyApiKey, SitePolicy, TokenEvent

from .helpers import bearer

pytestmark = pytest.mark.django_db

REVOKE = "/api/credentials/revoke"
LEGACY_KEY = "legacy-incident-key-0123456789"


def report(client, values, **extra):
    body = {"credentials": values, **extra}
    return client.post(REVOKE, json.dumps(body), content_type="application/json", REMOTE_ADDR="203.0.113.9")


def test_a_reported_token_is_refused_on_the_next_request_and_its_owner_is_mailed(client, issued, mailoutbox):
    token, value = issued
    assert client.get("/api/users/me", **bearer(value)).status_code == 200

    response = report(client, [value], source="pastebin scan", url="https://paste.example/abc")

    assert response.status_code == 202
    assert client.get("/api/users/me", **bearer(value)).status_code == 401
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by is None
    event = TokenEvent.objects.get(token=token, kind=TokenEvent.Kind.REVOKED)
    assert event.ip == "203.0.113.9"
    assert event.detail == "reported leaked · pastebin scan · https://paste.example/abc"
    [mail] = mailoutbox
    assert mail.to == ["alice@example.com"]
    assert token.name in mail.subject
    for expected in (
        token.name,
        token.last_characters,
        "pastebin scan",
        "https://paste.example/abc",
        "/profile/integrations/authorizations/new/",
    ):
        assert expected in mail.body
    assert value not in mail.body and value not in mail.subject


def test_a_reported_legacy_key_is_revoked_and_its_owner_is_mailed(client, user, mailoutbox):
    key, _created = LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)

    assert report(client, [LEGACY_KEY]).status_code == 202

    assert client.get("/api/users/me", HTTP_REST_API_KEY=LEGACY_KEY).status_code == 401
    event = TokenEvent.objects.get(legacy_key=key, kind=TokenEvent.Kind.LEGACY_REVOKED)
    assert (event.ip, event.detail) == ("203.0.113.9", "reported leaked")
    [mail] = mailoutbox
    assert LEGACY_KEY not in mail.body and f"#{key.pk}" in mail.body


def test_real_revoked_and_made_up_values_get_byte_identical_answers(client, user, issue, mailoutbox):
    _real, real_value = issue(user, name="real")
    revoked, revoked_value = issue(user, name="revoked")
    revoked.revoke(actor=user)
    forged = real_value[:-8] + "AAAAAAAA"
    made_up = ["bpt_" + "x" * 52, forged, "not-a-key-at-all-but-long", "²", "\ud800", "\u202egnp.exe"]

    answers = {
        "real": report(client, [real_value]),
        "revoked": report(client, [revoked_value]),
        **{f"made up {i}": report(client, [v]) for i, v in enumerate(made_up)},
    }

    for label, response in answers.items():
        assert response.status_code == 202, label
        assert response.content == answers["real"].content, label
        # Every header alike but the request's own id.
        assert {k: v for k, v in response.items() if k != "X-Request-ID"} == {
            k: v for k, v in answers["real"].items() if k != "X-Request-ID"
        }, label
    assert answers["real"].content == b'{"received": 1}'
    assert len(mailoutbox) == 1  # only the real, active one


def test_a_report_costs_at_most_one_lookup_per_distinct_value(client, issued, django_assert_max_num_queries):
    _token, value = issued
    values = [value, value, "legacy-looking-key-000000001", "legacy-looking-key-000000002", "bpt_forged"]
    # Per value: one lookup (the token, two legacy-looking keys; the forged token needs none), the
    # revoke (UPDATE + event + refresh), the rate limit's cache reads and writes.
    with CaptureQueriesContext(connection) as queries:
        assert report(client, values).status_code == 202
    lookups = [q["sql"] for q in queries if "tokens_token" in q["sql"] and "public_id" in q["sql"]]
    legacy = [q["sql"] for q in queries if "tokens_legacyapikey" in q["sql"] and "digest" in q["sql"]]
    assert len(lookups) == 1
    assert len(legacy) == 2


def test_leak_reports_from_one_ipv6_64_share_one_limit(client, issued):
    token, value = issued

    def report_from(address, values):
        return client.post(
            REVOKE, json.dumps({"credentials": values}), content_type="application/json", REMOTE_ADDR=address
        )

    for n in range(settings.LEAK_REPORTS_PER_ADDRESS):
        assert report_from(f"2001:db8:9:9::{n + 1:x}", ["made-up-value-00000000"]).status_code == 202
    assert report_from("2001:db8:9:9:abcd::1", [value]).status_code == 429
    token.refresh_from_db()
    assert token.revoked_at is None
    assert report_from("2001:db8:9:a::1", [value]).status_code == 202


@pytest.mark.clock
def test_reports_past_the_per_address_limit_get_429_with_retry_after_and_revoke_nothing(client, issued):
    token, value = issued
    for _ in range(settings.LEAK_REPORTS_PER_ADDRESS):
        assert report(client, ["made-up-value-00000000"]).status_code == 202

    refused = report(client, [value])

    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_requests"
    assert 1 <= int(refused["Retry-After"]) <= 600
    token.refresh_from_db()
    assert token.revoked_at is None
    # Another address is not affected.
    other = client.post(
        REVOKE,
        json.dumps({"credentials": [value]}),
        content_type="application/json",
        REMOTE_ADDR="198.51.100.7",
    )
    assert other.status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps([]),
        json.dumps({"credentials": []}),
        json.dumps({"credentials": "bpt_x"}),
        json.dumps({"credentials": [1]}),
        json.dumps({"credentials": [""]}),
        json.dumps({"credentials": ["x"] * 1001}),
        json.dumps({"credentials": ["x"], "source": 5}),
        json.dumps({"credentials": ["x"], "extra": True}),
        "[" * 100_000 + "]" * 100_000,
        '{"credentials": ["x"], "url": ' + "9" * 5000 + "}",
    ],
    ids=[
        "not-json",
        "list",
        "empty",
        "string",
        "number",
        "empty-value",
        "too-many",
        "source-type",
        "unknown",
        "deep",
        "huge-number",
    ],
)
def test_malformed_reports_are_400_and_revoke_nothing(client, issued, body):
    token, value = issued
    response = client.post(REVOKE, body.replace('"x"', json.dumps(value)), content_type="application/json")
    assert response.status_code == 400, response.content
    assert set(response.json()) >= {"error", "detail"}
    token.refresh_from_db()
    assert token.revoked_at is None


def test_an_oversized_report_is_413_and_revokes_nothing(client, issued):
    token, value = issued
    body = json.dumps({"credentials": [value], "source": "x" * (incident.MAX_REPORT_BYTES + 1)})
    response = client.post(REVOKE, body, content_type="application/json")
    assert response.status_code == 413
    token.refresh_from_db()
    assert token.revoked_at is None


def test_hostile_source_and_url_reach_the_event_without_control_or_bidi_characters(client, issued):
    token, value = issued
    report(client, [value], source="evil\u202e\x00 scanner\n", url="https://x.example/\u200fa\x07b")
    event = TokenEvent.objects.get(token=token, kind=TokenEvent.Kind.REVOKED)
    assert event.detail == "reported leaked · evil scanner · https://x.example/ab"


# --- the event feed -----------------------------------------------------------------------------------------


@pytest.fixture
def auditor(make_user):
    auditor = make_user("audrey")
    auditor.user_permissions.add(Permission.objects.get(codename="view_tokenevent"))
    return auditor


def test_the_event_feed_needs_the_view_event_permission(client, user, issue):
    _token, value = issue(user)
    response = client.get("/api/events", **bearer(value))
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


def test_the_event_feed_lists_every_users_events_oldest_first_after_the_cursor(
    client, auditor, user, other_user, issue, staff_user
):
    _audit_token, audit_value = issue(auditor, name="siem")
    theirs, theirs_value = issue(other_user, name="theirs")
    mine, _mine_value = issue(user, name="mine")
    mine.rename("renamed", actor=user)
    report(client, [theirs_value], source="github")
    SitePolicy.load().record_change(actor=staff_user, fields=["maximum_lifetime"])

    events, url, pages = [], "/api/events?limit=3", 0
    while url:
        page = client.get(url, **bearer(audit_value)).json()
        events += page["results"]
        url, pages = page["next"], pages + 1

    assert pages == 3
    assert [e["id"] for e in events] == sorted(TokenEvent.objects.values_list("pk", flat=True))
    kinds = [(e["kind"], e["user"]["username"]) for e in events]
    # The collector's own first request comes last: its token's first use, from a new address.
    assert kinds == [
        ("created", "audrey"),
        ("created", "bob"),
        ("created", "alice"),
        ("renamed", "alice"),
        ("revoked", "bob"),
        ("policy_changed", "sam"),
        ("first_used", "audrey"),
        ("new_address", "audrey"),
    ]
    leak = events[4]
    assert (leak["token_id"], leak["actor"]) == (theirs.pk, None)
    assert leak["detail"] == "reported leaked · github"
    assert client.get(f"/api/events?after={events[-1]['id']}", **bearer(audit_value)).json() == {
        "results": [],
        "next": None,
    }


@pytest.mark.parametrize(
    "query",
    [
        "after=²",
        "after=-1",
        "after=1e3",
        "after=" + "9" * 30,
        "limit=0",
        "limit=1001",
        "limit=%00",
        "after=%EF%BC%91",
    ],
)
def test_the_event_feed_refuses_hostile_cursors_with_400(client, auditor, issue, query):
    _token, value = issue(auditor)
    response = client.get(f"/api/events?{query}", **bearer(value))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.django_db(transaction=True)
def test_the_event_feed_never_skips_an_event_whose_transaction_commits_after_a_later_one(user):
    """Ids are drawn in INSERT order but commits happen in any order: a cursor must not jump a late one."""
    a_inserted, release_a, b_done = threading.Event(), threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                TokenEvent.objects.create(user=user, kind=TokenEvent.Kind.POLICY_CHANGED, detail="slow")
                a_inserted.set()
                release_a.wait(10)
        finally:
            connections.close_all()

    def fast_writer():
        try:
            a_inserted.wait(10)
            TokenEvent.objects.create(user=user, kind=TokenEvent.Kind.POLICY_CHANGED, detail="fast")
            b_done.set()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=slow_writer), threading.Thread(target=fast_writer)]
    for thread in threads:
        thread.start()
    a_inserted.wait(10)
    b_done.wait(1)  # on PostgreSQL the later id commits first; SQLite makes it wait for the first
    collected = [e.pk for e in TokenEvent.objects.feed(after=0, limit=100)]
    release_a.set()
    for thread in threads:
        thread.join(20)
    cursor = collected[-1] if collected else 0
    collected += [e.pk for e in TokenEvent.objects.feed(after=cursor, limit=100)]

    written = sorted(TokenEvent.objects.filter(detail__in=["slow", "fast"]).values_list("pk", flat=True))
    assert len(written) == 2
    assert collected == written


# --- leak reports and rotation ------------------------------------------------------------------------------


def self_rotate(client, value, overlap):
    response = client.post(
        "/api/tokens/self/rotate",
        json.dumps({"overlap": overlap}),
        content_type="application/json",
        **bearer(value),
    )
    assert response.status_code == 201
    return response.json()


def works(client, value):
    return client.get("/api/users/me", **bearer(value)).status_code == 200


def test_a_reported_value_in_its_rotation_overlap_ends_at_once_with_what_it_made(client, issued, mailoutbox):
    token, value = issued
    made = self_rotate(client, value, 3600)
    assert works(client, value) and works(client, made["token"])
    mailoutbox.clear()

    assert report(client, [value], source="pastebin scan").status_code == 202

    assert not works(client, value)
    # The replacement was made with the leaked value: whoever had that may hold it too.
    assert not works(client, made["token"])
    event = TokenEvent.objects.get(token_id=made["id"], kind=TokenEvent.Kind.REVOKED)
    assert f"made with token #{token.pk}" in event.detail and "pastebin scan" in event.detail
    [mail] = mailoutbox
    assert "has been revoked" in mail.body
    assert f"…{made['last_characters']}" in mail.body and f"/authorizations/{made['id']}/" in mail.body
    assert value not in mail.body and made["token"] not in mail.body


def test_a_thief_who_rotated_the_leaked_value_first_loses_every_value_it_led_to(client, issued, mailoutbox):
    _token, value = issued
    # No overlap: the leaked value stops at once; the thief holds the replacement and its replacement.
    second = self_rotate(client, value, 0)
    third = self_rotate(client, second["token"], 0)
    assert not works(client, value) and works(client, third["token"])
    mailoutbox.clear()

    assert report(client, [value]).status_code == 202

    assert not works(client, third["token"])
    [mail] = mailoutbox
    assert "had already stopped working" in mail.body and f"…{third['last_characters']}" in mail.body


def test_tokens_made_by_a_person_survive_a_report_of_the_value_they_replaced(client, user, issued):
    token, value = issued
    policy = SitePolicy.load()
    policy.bearer_can_create_tokens = True
    policy.save()
    # Made with the leaked value by the token itself: revoked with it.
    minted = client.post("/api/tokens", {"name": "minted"}, content_type="application/json", **bearer(value))
    assert minted.status_code == 201
    # The owner rotates on the site: the new value never passed through the leaked one.
    client.force_login(user)
    rotated = client.post(
        f"/api/tokens/{token.pk}/rotate", json.dumps({"overlap": 3600}), content_type="application/json"
    ).json()
    client.logout()

    report(client, [value])

    assert not works(client, value) and not works(client, minted.json()["token"])
    assert works(client, rotated["token"])


def test_the_owners_activity_stream_says_a_revocation_came_from_a_leak_report_and_where(client, user, issue):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    _reported, reported_value = issue(user, name="deploy-bot")
    _bare, bare_value = issue(user, name="cron-job")
    by_hand, _ = issue(user, name="laptop")
    by_hand.revoke(actor=user)
    report(client, [reported_value], source="pastebin scan", url="https://paste.example/abc")
    report(client, [bare_value, LEGACY_KEY])

    client.force_login(user)
    stream = " ".join(client.get("/profile/").content.decode().split())
    assert (
        'deploy-bot</a> <span class="leak-report">because it was reported leaked: pastebin scan · '
        "https://paste.example/abc</span>" in stream
    )
    assert 'cron-job</a> <span class="leak-report">because it was reported leaked</span>' in stream
    assert (
        'Your legacy API key was revoked <span class="leak-report">because it was reported leaked' in stream
    )
    assert stream.count("reported leaked") == 3  # the revocation by hand says nothing of the kind

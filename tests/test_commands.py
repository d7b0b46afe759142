"""Management commands via call_command: good input works; bad input is a CommandError, nothing changed."""

import io
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tokens.models import LegacyApiKey, SitePolicy, Token, TokenEvent, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import _snapshot, bearer

pytestmark = pytest.mark.django_db


def run(*args, **options):
    """Run a command and return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "name",
    [
        "create_token",
        "revoke_token",
        "rotate_token",
        "import_legacy_keys",
        "prune_usage",
        "notify_expiring_tokens",
        "send_alerts",
        "export_events",
        "summarise_usage",
    ],
)
def test_every_command_explains_itself_with_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        call_command(name, "--help")
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


# --- create_token and revoke_token --------------------------------------------------------------------------


def test_create_token_prints_the_value_once_on_stdout_under_the_policy(user, policy):
    out, err = run("create_token", "alice", "service", "--days", "10", "--purpose", "backups")
    value = out.strip()
    token = Token.objects.get()
    assert Token.objects.find_by_value(value) == token
    assert (token.user, token.name, token.purpose) == (user, "service", "backups")
    assert f"Created token #{token.pk}" in err and value not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["nobody", "service"], "No user named 'nobody'"),
        (["alice", "service", "--days", "400"], "The longest lifetime allowed is"),
        (["alice", "service", "--never"], "Tokens without an expiry date are not allowed"),
        (["alice", "service", "--days", "0"], "The lifetime must be positive"),
        (["alice", "   "], "Enter a name"),
        # Past the year 9999: an OverflowError (a traceback) before the lifetime was bounded.
        (["alice", "service", "--days", "9999999"], "The lifetime can be at most 100 years"),
        (["alice", "service", "--hours", str(10**12)], "The lifetime can be at most 100 years"),
        (["alice", "evil\u202egnp"], "U\\+202E"),
    ],
)
def test_create_token_refuses_bad_input_and_creates_nothing(user, policy, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_token", *args)
    assert not Token.objects.exists()


def test_revoke_token_revokes_by_id_and_by_value_from_stdin(user, issue, monkeypatch, staff_user):
    by_id, _value = issue(user, name="one")
    by_value, value = issue(user, name="two")
    out, _err = run("revoke_token", "--id", str(by_id.pk))
    assert f"Revoked token #{by_id.pk}" in out
    monkeypatch.setattr("sys.stdin", io.StringIO(value + "\n"))
    out, _err = run("revoke_token", "--value", "-")
    assert f"Revoked token #{by_value.pk}" in out and value not in out
    assert {t.status for t in Token.objects.all()} == {"revoked"}
    # Nobody signed in revoked it: the record says the command line did, and blames no person.
    assert Token.objects.get(pk=by_value.pk).revoked_by is None
    assert TokenEvent.objects.get(token=by_value, kind="revoked").detail == "manage.py revoke_token"
    out, _err = run("revoke_token", "--id", str(by_id.pk))
    assert "already revoked; nothing changed" in out


def test_create_token_respects_the_active_token_limit(user, issue, policy):
    SitePolicy.objects.filter(pk=1).update(max_active_tokens=1)
    issue(user, name="first")
    with pytest.raises(CommandError, match="You have reached the limit of 1 active tokens"):
        run("create_token", "alice", "second", "--days", "5")
    assert Token.objects.count() == 1


@pytest.mark.parametrize(
    "args, message",
    [(["--id", "999"], "No token with id 999"), (["--value", "bpt_forged"], "No token matches that value")],
)
def test_revoke_token_refuses_unknown_tokens_and_changes_nothing(issued, args, message):
    before = _snapshot()
    with pytest.raises(CommandError, match=message):
        run("revoke_token", *args)
    assert _snapshot() == before


# --- prune_usage --------------------------------------------------------------------------------------------


def _requests(client, value, count):
    for _ in range(count):
        assert client.get("/api/users/me", **bearer(value)).status_code == 200


def _shown(token):
    """The token's count and 150 days of daily totals as its pages show them (summaries + tail)."""
    token = Token.objects.get(pk=token.pk)
    return usage_totals([token])[0].request_count, token.daily_usage.series(
        days=150, tail=UsageRecord.objects.unsummarised(token=token)
    )


def _age(days, ids):
    UsageRecord.objects.filter(pk__in=ids).update(at=timezone.now() - timedelta(days=days))


def test_prune_usage_deletes_only_records_past_retention_in_batches_and_keeps_totals(client, issued, policy):
    token, value = issued
    _requests(client, value, 7)
    ids = list(UsageRecord.objects.order_by("pk").values_list("pk", flat=True))
    _age(120, ids[:5])
    _age(60, ids[5:6])
    shown_before = _shown(token)
    assert shown_before[0] == 7 and sum(a for _d, a, _r in shown_before[1]) == 7
    out, _err = run("prune_usage", "--batch-size", "2")
    assert "Deleted 5 usage record(s)" in out and "in 3 batch(es)" in out
    assert list(UsageRecord.objects.order_by("pk").values_list("pk", flat=True)) == ids[5:]
    assert _shown(token) == shown_before
    token.refresh_from_db()
    assert token.request_count == 7  # summarised before anything was deleted
    assert token.client_addresses.get().requests == 7
    out, _err = run("prune_usage")
    assert "Deleted 0 usage record(s)" in out


def test_summarise_usage_folds_the_records_into_the_counts_once(client, issued):
    token, value = issued
    _requests(client, value, 3)
    out, _err = run("summarise_usage", "--batch-size", "2")
    assert "Summarised 3 usage record(s)" in out
    assert Token.objects.get(pk=token.pk).request_count == 3
    out, _err = run("summarise_usage")
    assert "Summarised 0 usage record(s)" in out
    assert _shown(token)[0] == 3
    with pytest.raises(CommandError, match="--batch-size must be a positive number"):
        run("summarise_usage", "--batch-size", "0")


def test_prune_usage_follows_the_policy_retention(client, issued, policy):
    _requests(client, issued[1], 2)
    _age(20, UsageRecord.objects.values_list("pk", flat=True)[:1])
    run("prune_usage")
    assert UsageRecord.objects.count() == 2
    SitePolicy.objects.filter(pk=1).update(usage_retention_days=14)
    run("prune_usage")
    assert UsageRecord.objects.count() == 1


def test_prune_usage_dry_run_counts_and_deletes_nothing(client, issued, policy):
    _requests(client, issued[1], 3)
    _age(100, UsageRecord.objects.values_list("pk", flat=True))
    out, _err = run("prune_usage", "--dry-run")
    assert "Would delete 3 usage record(s)" in out
    assert UsageRecord.objects.count() == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive"),
        (["--pause", "-1"], "--pause must be zero or a positive"),
    ],
)
def test_prune_usage_refuses_bad_options_and_deletes_nothing(client, issued, policy, args, message):
    _requests(client, issued[1], 2)
    _age(100, UsageRecord.objects.values_list("pk", flat=True))
    with pytest.raises(CommandError, match=message):
        run("prune_usage", *args)
    assert UsageRecord.objects.count() == 2


# --- notify_expiring_tokens ---------------------------------------------------------------------------------


@pytest.fixture
def expiring(user, other_user, make_user, issue, policy):
    """alice: two tokens due, one later, one revoked; bob: one due; carol (no email): one due."""
    carol = make_user("carol")
    carol.email = ""
    carol.save()
    tokens = {
        "alice-soon": issue(user, name="alice-soon", days=2),
        "alice-week": issue(user, name="alice-week", days=6),
        "alice-later": issue(user, name="alice-later", days=20),
        "alice-revoked": issue(user, name="alice-revoked", days=3),
        "bob-soon": issue(other_user, name="bob-soon", days=1),
        "carol-soon": issue(carol, name="carol-soon", days=1),
    }
    tokens["alice-revoked"][0].revoke(actor=user)
    return tokens


def test_notify_mails_each_owner_once_listing_their_expiring_tokens_with_links(expiring, settings):
    settings.SITE_URL = "https://tokens.example.org"
    out, _err = run("notify_expiring_tokens")
    assert "Mailed 2 owner(s) about 3 expiring token(s)." in out
    assert "Skipped owners without an email address: carol." in out
    by_recipient = {tuple(m.to): m for m in mail.outbox}
    assert set(by_recipient) == {("alice@example.com",), ("bob@example.com",)}
    alice = by_recipient[("alice@example.com",)]
    assert alice.subject == "2 of your API tokens expire soon"
    soon, week = expiring["alice-soon"][0], expiring["alice-week"][0]
    assert "alice-soon" in alice.body and "alice-week" in alice.body
    assert "alice-later" not in alice.body and "alice-revoked" not in alice.body
    assert f"https://tokens.example.org/profile/integrations/authorizations/{soon.pk}/" in alice.body
    assert f"https://tokens.example.org/profile/integrations/authorizations/{week.pk}/" in alice.body
    # Straight to each token's rotate page: replacing a token is one click from the notice.
    assert f"https://tokens.example.org/profile/integrations/authorizations/{soon.pk}/rotate/" in alice.body
    assert f"https://tokens.example.org/profile/integrations/authorizations/{week.pk}/rotate/" in alice.body
    assert soon.expires_at.strftime("%Y-%m-%d %H:%M") in alice.body
    for message in mail.outbox:
        for token, value in expiring.values():
            assert value not in message.body and value not in message.subject
            assert token.digest not in message.body


def test_notify_never_mails_a_token_twice_for_the_same_window(expiring):
    run("notify_expiring_tokens")
    assert len(mail.outbox) == 2
    out, _err = run("notify_expiring_tokens")
    assert len(mail.outbox) == 2
    assert "Mailed 0 owner(s)" in out
    notified = Token.objects.filter(expiry_notified_at__isnull=False)
    assert set(notified.values_list("name", flat=True)) == {"alice-soon", "alice-week", "bob-soon"}


@pytest.mark.clock
def test_a_token_whose_expiry_moved_later_is_mailed_again_when_it_approaches_again(expiring):
    run("notify_expiring_tokens")
    soon = expiring["alice-soon"][0]
    # The expiry moves 30 days out: the earlier notice no longer covers it...
    Token.objects.filter(pk=soon.pk).update(expires_at=timezone.now() + timedelta(days=30))
    run("notify_expiring_tokens")
    assert len(mail.outbox) == 2
    # ...and once it is within the window again, the owner is told again, about that token only.
    notified_at = Token.objects.get(pk=soon.pk).expiry_notified_at
    Token.objects.filter(pk=soon.pk).update(
        expires_at=timezone.now() + timedelta(days=3), expiry_notified_at=notified_at - timedelta(days=27)
    )
    run("notify_expiring_tokens")
    assert len(mail.outbox) == 3
    assert mail.outbox[-1].to == ["alice@example.com"]
    assert "alice-soon" in mail.outbox[-1].body and "alice-week" not in mail.outbox[-1].body


@pytest.mark.clock
def test_notify_follows_the_policy_window(expiring):
    SitePolicy.objects.filter(pk=1).update(expiry_notice_days=30)
    run("notify_expiring_tokens")
    alice = next(m for m in mail.outbox if m.to == ["alice@example.com"])
    assert "alice-later" in alice.body


def test_notify_dry_run_sends_and_marks_nothing(expiring):
    out, _err = run("notify_expiring_tokens", "--dry-run")
    assert "Would mail alice about 2 token(s)." in out
    assert mail.outbox == []
    assert not Token.objects.filter(expiry_notified_at__isnull=False).exists()


def test_notify_records_expired_events_for_the_activity_stream(user, issue, policy):
    token, _value = issue(user, name="old")
    Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    run("notify_expiring_tokens")
    run("notify_expiring_tokens")
    assert TokenEvent.objects.filter(token=token, kind="expired").count() == 1


def test_notify_leaves_tokens_unmarked_when_mail_cannot_be_sent(expiring, settings):
    # A real SMTP backend pointed at a closed port: the send fails the way a down mail server does.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    with pytest.raises(CommandError, match=r"Could not send to: alice .*, bob"):
        run("notify_expiring_tokens")
    assert not Token.objects.filter(expiry_notified_at__isnull=False).exists()


def test_import_refuses_keys_that_could_never_sign_in(user, tmp_path):
    csv_file = tmp_path / "keys.csv"
    csv_file.write_text(
        "username,key\nalice,abcdefghijklmnop\u00e91\nalice,tab\there-0123456789\n", encoding="utf-8"
    )
    with pytest.raises(CommandError, match="2 bad row"):
        run("import_legacy_keys", str(csv_file))
    assert not LegacyApiKey.objects.exists()


def test_create_token_makes_a_read_only_narrowed_address_bound_token(viewer, policy):
    out, err = run(
        "create_token",
        "victor",
        "monitor",
        "--days",
        "10",
        "--read-only",
        "--permission",
        "auth.view_user",
        "--allow-ip",
        "192.0.2.0/24",
        "--allow-ip",
        "2001:db8::1",
    )
    token = Token.objects.get()
    assert (token.access, token.permissions, token.allowed_ips) == (
        "read",
        ["auth.view_user"],
        ["192.0.2.0/24", "2001:db8::1"],
    )
    assert "Read only" in err and "192.0.2.0/24" in err and out.strip() not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--permission", "auth.delete_user"], "The owner does not hold: auth.delete_user"),
        (["--allow-ip", "192.0.2.1/24"], "did you mean 192.0.2.0/24"),
        (["--allow-ip", "not-an-ip"], "is not an IPv4 or IPv6 address"),
    ],
)
def test_create_token_refuses_limits_the_user_cannot_have_and_creates_nothing(user, policy, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_token", "alice", "service", "--days", "10", *args)
    assert not Token.objects.exists()


# --- export_events -----------------------------------------------------------------------------------------


def test_export_events_prints_every_event_after_the_cursor_as_json_lines(user, issue):
    token, _value = issue(user, name="exported")
    token.rename("renamed", actor=user)
    token.revoke(actor=None, detail="reported leaked · github")
    ids = list(TokenEvent.objects.order_by("pk").values_list("pk", flat=True))

    out, _err = run("export_events")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert [line["kind"] for line in lines] == ["created", "renamed", "revoked"]
    assert lines[2] == {
        "id": ids[2],
        "at": lines[2]["at"],
        "kind": "revoked",
        "user": {"id": user.pk, "username": "alice"},
        "actor": None,
        "token_id": token.pk,
        "legacy_key_id": None,
        "ip": None,
        "detail": "reported leaked · github",
    }
    out, _err = run("export_events", "--after", str(ids[0]))
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids[1:]
    out, _err = run("export_events", "--after", str(ids[0]), "--limit", "1")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids[1:2]


@pytest.mark.parametrize(
    "args", [["--after", "-1"], ["--after", "²"], ["--limit", "0"], ["--after", "9" * 30]]
)
def test_export_events_refuses_bad_arguments(args):
    with pytest.raises((CommandError, SystemExit)):
        run("export_events", *args)


@pytest.mark.parametrize("args", [["--interval", "0"], ["--interval", "nan"], ["--loop", "--rounds", "0"]])
def test_send_alerts_refuses_bad_arguments(args):
    with pytest.raises(CommandError):
        run("send_alerts", *args)


# --- rotate_token -------------------------------------------------------------------------------------------


def test_rotate_token_prints_the_new_value_once_on_stdout_and_keeps_the_old_for_the_overlap(user, issue):
    old, old_value = issue(user, name="service", access="read")
    out, err = run("rotate_token", str(old.pk), "--overlap", "1h")
    value = out.strip()
    new = Token.objects.get(replaces=old)
    assert Token.objects.find_by_value(value) == new and new.access == "read"
    assert f"#{new.pk}" in err and value not in err and old_value not in out + err
    old.refresh_from_db()
    assert old.status == "rotating" and old.rotation_ends_at - old.rotated_at == timedelta(hours=1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["999999"], "No token with id 999999"),
        (["²"], "whole number"),
        (["{pk}", "--overlap", "forever"], "--overlap takes"),
        (["{pk}", "--overlap", "²"], "--overlap takes"),
        (["{pk}", "--overlap", "8d"], "--overlap takes"),
        (["{pk}", "--overlap", "999999"], "longest overlap"),
        (["{pk}", "--never"], "without an expiry"),
        (["{pk}", "--days", "99999999"], "at most"),
    ],
)
def test_rotate_token_refuses_bad_input_clearly_and_changes_nothing(user, issue, args, message):
    token, _ = issue(user)
    before = _snapshot()
    with pytest.raises(CommandError, match=message):
        run("rotate_token", *[a.format(pk=token.pk) for a in args])
    assert _snapshot() == before


def test_rotate_token_refuses_a_token_that_is_already_rotating(user, issue):
    token, _ = issue(user)
    run("rotate_token", str(token.pk), "--overlap", "1d")
    before = _snapshot()
    with pytest.raises(CommandError, match=r"Only an active token can be rotated; #\d+ is rotating"):
        run("rotate_token", str(token.pk))
    assert _snapshot() == before

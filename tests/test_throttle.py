"""tokens/throttle.py: the sign-in throttle, the password-reset limits and the API failure limit.

Through the sign-in page, the admin's sign-in form, the password-reset pages and the API. The same limits
through a real gunicorn with several workers are in tests/live/test_hostile_http.py.
"""

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client

from tokens.models import AttemptCounter, LegacyApiKey, RefusedClient, UsageRecord
from tokens.throttle import ThrottledAdminAuthenticationForm

from .helpers import PASSWORD, assert_clear_api_error, bearer, sign_in, signed_in_client

# --- sign-in abuse ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_repeated_failed_sign_ins_for_one_username_are_refused_for_a_while_with_429(
    fresh_throttle, client, user, other_user
):
    for _ in range(settings.SIGN_IN_FAILURES_PER_USERNAME):
        response = sign_in(client, "alice", "wrong password")
        assert response.status_code == 200
        assert b"Please enter a correct username and password" in response.content

    # Locked: even the right password is refused (it is not checked), with a clear message.
    refused = sign_in(client, "ALICE ", PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed sign-in attempts" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session

    # Someone else signing in from the same address is not affected.
    other = Client()
    assert sign_in(other, "bob", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_many_failed_sign_ins_from_one_address_lock_that_address_only(fresh_throttle, client, user):
    for n in range(settings.SIGN_IN_FAILURES_PER_ADDRESS):
        # A different made-up username each time: the per-username limit is never reached.
        assert sign_in(client, f"guess{n}", "wrong", address="198.51.100.9").status_code == 200
    assert sign_in(client, "alice", PASSWORD, address="198.51.100.9").status_code == 429
    assert sign_in(Client(), "alice", PASSWORD, address="192.0.2.44").status_code == 302


@pytest.mark.django_db
def test_failed_sign_ins_from_one_ipv6_64_count_as_one_address_however_many_addresses_it_uses(
    fresh_throttle, client, user
):
    for n in range(settings.SIGN_IN_FAILURES_PER_ADDRESS):
        address = f"2001:db8:77:1:{n:x}::{n + 1:x}"  # a new address of the same /64 each time
        assert sign_in(client, f"guess{n}", "wrong", address=address).status_code == 200
    assert sign_in(client, "alice", PASSWORD, address="2001:db8:77:1:ffff::1").status_code == 429
    assert sign_in(Client(), "alice", PASSWORD, address="2001:db8:77:2::1").status_code == 302


@pytest.mark.django_db
def test_a_successful_sign_in_clears_the_usernames_failures(fresh_throttle, client, user):
    for _ in range(settings.SIGN_IN_FAILURES_PER_USERNAME - 1):
        sign_in(client, "alice", "wrong password")
    assert sign_in(client, "alice", PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.SIGN_IN_FAILURES_PER_USERNAME - 1):
        assert sign_in(client, "alice", "wrong password").status_code == 200
    assert sign_in(client, "alice", PASSWORD).status_code == 302


@pytest.mark.django_db
def test_the_admin_sign_in_form_shares_the_same_lock(fresh_throttle, rf, staff_user):
    def admin_form(password):
        request = rf.post("/admin/login/", REMOTE_ADDR="203.0.113.8")
        return ThrottledAdminAuthenticationForm(request, data={"username": "sam", "password": password})

    assert admin_form(PASSWORD).is_valid()
    for _ in range(settings.SIGN_IN_FAILURES_PER_USERNAME):
        assert sign_in(Client(), "sam", "wrong password", address="203.0.113.8").status_code == 200
    locked = admin_form(PASSWORD)
    assert not locked.is_valid()
    assert locked.has_error("__all__", code="throttled")


@pytest.mark.django_db
def test_the_admin_sign_in_page_refuses_a_locked_username(fresh_throttle, staff_user):
    for _ in range(settings.SIGN_IN_FAILURES_PER_USERNAME):
        sign_in(Client(), "sam", "wrong password")
    admin_client = Client()
    response = admin_client.post(
        "/admin/login/?next=/admin/",
        {"username": "sam", "password": PASSWORD, "next": "/admin/"},
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == 200
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in admin_client.session


# --- password reset -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_password_reset_is_not_offered_while_mail_would_only_be_printed_to_the_log(
    fresh_throttle, client, user, settings, capsys
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    user.email = "alice@example.org"
    user.save()
    assert client.get("/accounts/password_reset/").status_code == 404
    assert client.post("/accounts/password_reset/", {"email": "alice@example.org"}).status_code == 404
    assert client.get("/accounts/reset/MQ/set-password/").status_code == 404
    assert "password_reset" not in client.get("/accounts/login/").content.decode()
    printed = capsys.readouterr()
    assert "/reset/" not in printed.out + printed.err


@pytest.mark.django_db
def test_password_reset_requests_are_limited_per_email_with_the_same_answer_and_no_link_in_any_log(
    fresh_throttle, client, user, caplog, capsys
):
    user.email = "alice@example.org"
    user.save()
    assert 'href="/accounts/password_reset/"' in client.get("/accounts/login/").content.decode()
    answers = [
        client.post("/accounts/password_reset/", {"email": "Alice@example.org"}, REMOTE_ADDR=f"192.0.2.{n}")
        for n in range(settings.PASSWORD_RESETS_PER_EMAIL + 3)
    ]
    # Limited or not, every request gets the same answer: nothing says whether mail was sent.
    assert {(a.status_code, a["Location"]) for a in answers} == {(302, "/accounts/password_reset/done/")}
    assert len(mail.outbox) == settings.PASSWORD_RESETS_PER_EMAIL
    link = next(line for line in mail.outbox[0].body.splitlines() if "/reset/" in line).strip()
    printed = capsys.readouterr()
    assert link not in printed.out + printed.err + caplog.text


# --- guessing credentials against the API -------------------------------------------------------------------


def _legacy(client, key, address="203.0.113.50", **extra):
    return client.get("/api/users/me", HTTP_REST_API_KEY=key, REMOTE_ADDR=address, **extra)


LEGACY_KEY = "f00d-legacy-key-for-guessing-tests-42"


@pytest.mark.django_db
def test_a_client_guessing_legacy_keys_gets_429_with_retry_after_even_for_a_right_key(client, user, policy):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    for n in range(settings.API_FAILURES_PER_ADDRESS):
        assert _legacy(client, f"guessed-key-number-{n:04d}").status_code == 401
    locked = _legacy(client, LEGACY_KEY)
    assert_clear_api_error(locked, 429)
    assert locked.json()["error"] == "too_many_requests"
    assert 0 < int(locked["Retry-After"]) <= 60
    # Other clients are not affected; the locked one is refused before the lookup, so nothing is recorded.
    assert _legacy(client, LEGACY_KEY, address="198.51.100.77").status_code == 200
    assert UsageRecord.objects.filter(ip="203.0.113.50").count() == 0


@pytest.mark.django_db
def test_a_client_guessing_from_new_ipv6_addresses_of_one_64_gets_429_all_the_same(client, user, policy):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    for n in range(settings.API_FAILURES_PER_ADDRESS):
        assert (
            _legacy(client, f"guessed-key-number-{n:04d}", address=f"2001:db8:5::{n + 1:x}").status_code
            == 401
        )
    assert _legacy(client, LEGACY_KEY, address="2001:db8:5::ffff").status_code == 429
    assert _legacy(client, LEGACY_KEY, address="2001:db8:6::1").status_code == 200


@pytest.mark.django_db
def test_a_client_failing_again_and_again_with_a_revoked_bearer_token_gets_429(client, issued, staff_user):
    token, value = issued
    token.revoke(actor=staff_user)
    statuses = [
        client.get("/api/users/me", **bearer(value), REMOTE_ADDR="203.0.113.51").status_code
        for _ in range(settings.API_FAILURES_PER_ADDRESS + 2)
    ]
    assert statuses == [401] * settings.API_FAILURES_PER_ADDRESS + [429, 429]


@pytest.mark.django_db
def test_valid_credentials_never_meet_the_api_failure_limit_and_write_no_counter(
    client, issued, user, policy
):
    LegacyApiKey.objects.import_key(user=user, key=LEGACY_KEY)
    for _ in range(3 * settings.API_FAILURES_PER_ADDRESS):
        assert client.get("/api/users/me", **bearer(issued[1])).status_code == 200
        assert _legacy(client, LEGACY_KEY).status_code == 200
    assert AttemptCounter.objects.count() == 0


@pytest.mark.django_db
def test_refused_unknown_credentials_are_listed_for_administrators_by_client_address(
    client, user, staff_user, policy
):
    for n in range(3):
        _legacy(client, f"unknown-key-from-a-scanner-{n}", HTTP_USER_AGENT="scanner/2.0")
    _legacy(client, "unknown-key-from-elsewhere-00", address="192.0.2.99")
    assert {(r.ip, r.attempts, r.last_user_agent) for r in RefusedClient.objects.all()} == {
        ("203.0.113.50", 3, "scanner/2.0"),
        ("192.0.2.99", 1, ""),
    }
    admin = signed_in_client(staff_user)
    page = admin.get("/admin/tokens/refusedclient/").content.decode()
    assert "203.0.113.50" in page and "scanner/2.0" in page and "192.0.2.99" in page


# --- every limit is a setting -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_failure_limit_follows_its_setting_both_ways(
    fresh_throttle, client, issued, staff_user, settings
):
    token, value = issued
    token.revoke(actor=staff_user)

    def failures(address, count):
        return [
            client.get("/api/users/me", **bearer(value), REMOTE_ADDR=address).status_code
            for _ in range(count)
        ]

    settings.API_FAILURES_PER_ADDRESS = 3
    assert failures("203.0.113.60", 4) == [401, 401, 401, 429]
    # A CI fleet behind one NAT address: a higher limit lets its stale credentials fail without a lock.
    settings.API_FAILURES_PER_ADDRESS = 100
    assert failures("203.0.113.61", 40) == [401] * 40


@pytest.mark.django_db
def test_the_sign_in_limits_per_username_and_per_address_follow_their_settings(
    fresh_throttle, client, user, other_user, settings
):
    settings.SIGN_IN_FAILURES_PER_USERNAME = 2
    assert [sign_in(client, "alice", "wrong").status_code for _ in range(3)] == [200, 200, 429]
    assert (
        sign_in(client, "alice", PASSWORD, address="198.51.100.9").status_code == 429
    )  # the username's lock

    settings.SIGN_IN_FAILURES_PER_USERNAME = 50
    settings.SIGN_IN_FAILURES_PER_ADDRESS = 3
    answers = [sign_in(client, f"nobody-{n}", "wrong", address="198.51.100.10").status_code for n in range(4)]
    assert answers == [200, 200, 200, 429]
    assert sign_in(client, "bob", PASSWORD, address="198.51.100.10").status_code == 429  # the address's lock
    assert sign_in(client, "bob", PASSWORD, address="198.51.100.11").status_code == 302


@pytest.mark.django_db
def test_the_password_reset_limits_per_email_and_per_address_follow_their_settings(
    fresh_throttle, client, user, other_user, settings
):
    user.email, other_user.email = "alice@example.org", "bob@example.org"
    user.save()
    other_user.save()
    settings.PASSWORD_RESETS_PER_EMAIL = 1
    for n in range(3):
        client.post("/accounts/password_reset/", {"email": "alice@example.org"}, REMOTE_ADDR=f"192.0.2.{n}")
    assert len(mail.outbox) == 1

    settings.PASSWORD_RESETS_PER_EMAIL = 10
    settings.PASSWORD_RESETS_PER_ADDRESS = 2
    for _ in range(4):
        client.post("/accounts/password_reset/", {"email": "bob@example.org"}, REMOTE_ADDR="192.0.2.50")
    assert len(mail.outbox) == 1 + 2


@pytest.mark.django_db
def test_the_leak_report_limit_follows_its_setting(fresh_throttle, client, settings):
    def report(address):
        return client.post(
            "/api/credentials/revoke",
            '{"credentials": ["made-up-value-00000000"]}',
            content_type="application/json",
            REMOTE_ADDR=address,
        ).status_code

    settings.LEAK_REPORTS_PER_ADDRESS = 2
    assert [report("203.0.113.70") for _ in range(3)] == [202, 202, 429]
    settings.LEAK_REPORTS_PER_ADDRESS = 60
    assert [report("203.0.113.71") for _ in range(40)] == [202] * 40

"""tokens/models/tokens.py: issuing, statuses and their querysets, expiry events, saving, rotation."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from tokens.models import (
    Token,
    TokenEvent,
)
from tokens.usage.summarise import summarise

from ..usage.helpers import record_use

pytestmark = pytest.mark.django_db


def test_issue_enforces_the_policy_bounds(user, policy):
    now = timezone.now()
    for expires_at in (now + timedelta(minutes=1), now + timedelta(days=366), now - timedelta(days=1)):
        with pytest.raises(ValidationError) as error:
            Token.objects.issue(user=user, name="x", expires_at=expires_at)
        assert "expires_at" in error.value.message_dict
    assert not Token.objects.exists()


def test_issue_stores_no_plaintext_and_str_is_the_name(user, issue):
    token, value = issue(user, name="deploy")
    row = Token.objects.filter(pk=token.pk).values().get()
    assert value not in repr(row)
    assert value[len("bpt_") + 12 : -8] not in repr(row)  # not even the secret part
    assert str(token) == "deploy" and value not in repr(token)
    assert TokenEvent.objects.filter(token=token, kind="created").count() == 1


def test_a_reused_nonce_returns_the_first_token_and_creates_nothing(user):
    expires = timezone.now() + timedelta(days=1)
    first, _ = Token.objects.issue(user=user, name="a", expires_at=expires, nonce="n1")
    with pytest.raises(Token.AlreadyIssued) as again:
        Token.objects.issue(user=user, name="b", expires_at=expires, nonce="n1")
    assert again.value.token == first and Token.objects.count() == 1


def test_status_and_status_filters(user, issue):
    active, _ = issue(user, name="active")
    expired, _ = issue(user, name="expired")
    revoked, _ = issue(user, name="revoked")
    Token.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    revoked.revoke(actor=user)
    assert [t.status for t in Token.objects.order_by("pk")] == ["active", "expired", "revoked"]
    for status, token in (("active", active), ("expired", expired), ("revoked", revoked)):
        assert list(Token.objects.with_status(status)) == [token]


def test_exceeding_finds_active_tokens_longer_than_a_new_maximum(user, issue, policy):
    _short, _ = issue(user, name="short", days=7)
    long, _ = issue(user, name="long", days=300)
    policy.no_expiry_allowed_for = "everyone"
    policy.save()
    forever, _ = issue(user, name="forever", days=None)
    assert set(Token.objects.exceeding(timedelta(days=30))) == {long, forever}
    long.shorten(timezone.now() + timedelta(days=30), actor=user)
    assert set(Token.objects.exceeding(timedelta(days=30))) == {forever}
    assert TokenEvent.objects.filter(token=long, kind="shortened").exists()


def test_expired_events_are_written_once(user, issue):
    token, _ = issue(user)
    Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    Token.objects.record_expiries()
    Token.objects.record_expiries()
    assert TokenEvent.objects.filter(token=token, kind="expired").count() == 1


def test_saving_a_token_read_before_some_requests_keeps_their_count(user, issue):
    token, _value = issue(user)
    stale = Token.objects.get(pk=token.pk)
    record_use(token, agent="ci")
    summarise()  # the counters are on the token's row now, after *stale* was read
    stale.purpose = "nightly backups"
    stale.save()
    token.refresh_from_db()
    assert (token.purpose, token.request_count, token.last_used_ip) == ("nightly backups", 1, "192.0.2.1")
    with pytest.raises(ValueError, match="kept by the database"):
        stale.save(update_fields=["request_count"])


def _perm(codename):
    return Permission.objects.get(codename=codename, content_type__app_label="auth")


def test_a_rotation_issues_a_token_with_every_setting_of_the_old_one_and_links_both(user, issue):
    user.user_permissions.add(_perm("view_user"))
    old, _value = issue(
        user,
        name="backup",
        purpose="nightly",
        access="read",
        permissions=["auth.view_user"],
        allowed_ips=["192.0.2.0/24"],
    )
    new, plaintext = old.rotate(overlap=timedelta(hours=1), actor=user, ip="192.0.2.9")
    assert plaintext.startswith("bpt_") and new.pk != old.pk
    assert (new.name, new.purpose, new.access, new.permissions, new.allowed_ips) == (
        "backup",
        "nightly",
        "read",
        ["auth.view_user"],
        ["192.0.2.0/24"],
    )
    old = Token.objects.select_related("replaced_by").get(pk=old.pk)
    assert new.replaces_id == old.pk and old.replaced_by_token.pk == new.pk
    assert old.status == "rotating" and new.status == "active"
    assert old.rotation_ends_at == old.rotated_at + timedelta(hours=1)
    kinds = {(e.token_id, e.kind, e.ip) for e in TokenEvent.objects.filter(kind=TokenEvent.Kind.ROTATED)}
    assert kinds == {(old.pk, "rotated", "192.0.2.9"), (new.pk, "rotated", "192.0.2.9")}


def test_the_new_expiry_is_the_old_lifetime_from_now_unless_another_is_chosen(user, issue):
    old, _ = issue(user, days=7)
    new, _ = old.rotate(overlap=timedelta(0), actor=user)
    assert abs((new.expires_at - new.created_at) - timedelta(days=7)) < timedelta(seconds=5)
    chosen = timezone.now() + timedelta(days=2)
    newer, _ = new.rotate(overlap=timedelta(0), actor=user, expires_at=chosen)
    assert newer.expires_at == chosen


def test_a_lifetime_the_policy_no_longer_allows_is_brought_within_it_on_rotation(user, issue, policy):
    old, _ = issue(user, days=300)
    policy.maximum_lifetime = timedelta(days=90)
    policy.default_lifetime = timedelta(days=30)
    policy.presets = ["1h", "1d", "7d", "30d", "90d"]
    policy.save()
    new, _ = old.rotate(overlap=timedelta(0), actor=user)
    assert abs((new.expires_at - new.created_at) - timedelta(days=90)) < timedelta(seconds=5)


def test_the_overlap_never_outlives_the_old_tokens_own_expiry(user):
    old, _ = Token.objects.issue(user=user, name="short", expires_at=timezone.now() + timedelta(minutes=30))
    old.rotate(overlap=timedelta(days=1), actor=user, expires_at=timezone.now() + timedelta(days=1))
    old.refresh_from_db()
    assert old.rotation_ends_at == old.expires_at


@pytest.mark.parametrize("state", ["rotating", "expired", "revoked", "rotation over"])
def test_only_an_active_token_can_be_rotated_and_a_refused_rotation_creates_nothing(user, issue, state):
    token, _ = issue(user)
    if state == "rotating":
        token.rotate(overlap=timedelta(hours=1), actor=user)
    elif state == "rotation over":
        token.rotate(overlap=timedelta(0), actor=user)
    elif state == "expired":
        Token.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    else:
        token.revoke(actor=user)
    count = Token.objects.count()
    with pytest.raises(Token.NotRotatable):
        Token.objects.get(pk=token.pk).rotate(overlap=timedelta(0), actor=user)
    assert Token.objects.count() == count


def test_an_overlap_beyond_the_policys_longest_is_refused_and_changes_nothing(user, issue, policy):
    policy.max_rotation_overlap = timedelta(days=1)
    policy.save()
    token, _ = issue(user)
    for overlap in (timedelta(days=7), timedelta(seconds=-1)):
        with pytest.raises(ValidationError) as error:
            token.rotate(overlap=overlap, actor=user)
        assert "overlap" in error.value.message_dict
    token.refresh_from_db()
    assert token.status == "active" and Token.objects.count() == 1


def test_a_refused_new_expiry_leaves_the_old_token_active(user, issue):
    token, _ = issue(user)
    with pytest.raises(ValidationError):
        token.rotate(overlap=timedelta(hours=1), actor=user, expires_at=None)  # "no expiry" not allowed
    token.refresh_from_db()
    assert token.status == "active" and token.rotation_ends_at is None and Token.objects.count() == 1


def test_the_active_token_cap_counts_the_new_token_but_not_the_rotating_one(user, issue, policy):
    policy.max_active_tokens = 2
    policy.save()
    first, _ = issue(user, name="one")
    issue(user, name="two")
    first.rotate(overlap=timedelta(days=1), actor=user)  # at the cap: still allowed
    assert Token.objects.for_user(user).active().count() == 2
    assert list(Token.objects.for_user(user).rotating()) == [first]
    with pytest.raises(ValidationError):
        issue(user, name="three")


def test_revoking_a_rotating_token_ends_its_overlap_at_once(user, issue):
    token, _ = issue(user)
    token.rotate(overlap=timedelta(days=1), actor=user)
    assert token.revoke(actor=user) is True
    assert Token.objects.get(pk=token.pk).status == "revoked"
    assert Token.objects.revoked().filter(pk=token.pk).exists()


def test_a_token_whose_overlap_is_over_counts_as_revoked_everywhere_and_a_revoke_changes_nothing(user, issue):
    token, _ = issue(user)
    token.rotate(overlap=timedelta(0), actor=user)
    token = Token.objects.get(pk=token.pk)
    assert token.status == "revoked" and token.ended_at == token.rotation_ends_at
    assert list(Token.objects.revoked()) == [token]
    assert not Token.objects.rotating().exists()
    assert token.revoke(actor=user) is False
    assert not TokenEvent.objects.filter(token=token, kind=TokenEvent.Kind.REVOKED).exists()


def test_rotating_a_token_whose_predecessor_is_in_overlap_ends_that_overlap_at_once(user, issue):
    first, _ = issue(user)
    second, _ = first.rotate(overlap=timedelta(days=1), actor=user)
    third, _ = second.rotate(overlap=timedelta(days=1), actor=user)
    statuses = {t.pk: t.status for t in Token.objects.all()}
    assert statuses == {first.pk: "revoked", second.pk: "rotating", third.pk: "active"}
    assert list(Token.objects.live().order_by("pk")) == [second, third]
    ended = TokenEvent.objects.get(token=first, kind=TokenEvent.Kind.REVOKED)
    assert "rotated again" in ended.detail and ended.actor == user


def test_revoking_a_token_ends_its_predecessors_overlap(user, issue):
    first, _ = issue(user)
    second, _ = first.rotate(overlap=timedelta(days=1), actor=user)
    assert second.revoke(actor=user) is True
    assert Token.objects.get(pk=first.pk).status == "revoked"
    assert not Token.objects.live().exists()
    assert (
        "replacement was revoked" in TokenEvent.objects.get(token=first, kind=TokenEvent.Kind.REVOKED).detail
    )


def test_the_cap_counts_a_token_and_its_predecessor_in_overlap_as_one(user, issue, policy):
    policy.max_active_tokens = 2
    policy.save()
    first, _ = issue(user, name="one")
    issue(user, name="two")
    # At the cap, a rotation is still allowed: the old token and its replacement count once.
    second, _ = first.rotate(overlap=timedelta(days=1), actor=user)
    with pytest.raises(ValidationError, match="limit of 2"):
        issue(user, name="three")
    # A value in its overlap whose replacement has already expired still works, and counts on its own.
    Token.objects.filter(pk=second.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert Token.objects.get(pk=first.pk).status == "rotating"
    with pytest.raises(ValidationError, match="limit of 2"):
        issue(user, name="three")
    first.revoke(actor=user)
    issue(user, name="three")


@pytest.mark.django_db(transaction=True)
def test_parallel_rotations_of_one_token_create_exactly_one_new_token(user, issue):

    token, _ = issue(user)
    barrier = threading.Barrier(4)
    outcomes = []

    def rotate():
        try:
            barrier.wait()
            Token.objects.get(pk=token.pk).rotate(overlap=timedelta(hours=1), actor=user)
            outcomes.append("rotated")
        except Token.NotRotatable:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "rotated"]
    assert Token.objects.filter(replaces=token).count() == 1
    assert Token.objects.for_user(user).count() == 2

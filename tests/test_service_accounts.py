"""Service accounts (tokens/models/service_accounts.py): no sign-in, who manages, what happens when people go.

The pages and the mails are tested here too, as a manager meets them; the API is in
test_api_service_accounts.py, the admin in test_admin_service_accounts.py.
"""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core import mail
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tokens.alerts import send_pending
from tokens.models import ManagerRole, ServiceAccount, Token, TokenEvent, is_service_account

from .helpers import PASSWORD, bearer, make_manager, sign_in

pytestmark = pytest.mark.django_db

PAGES = "/profile/integrations/authorizations"


@pytest.fixture
def account_token(service_account, issue):
    return issue(service_account.user, name="nightly-sync")


def use(client, value, ip="192.0.2.10"):
    return client.get("/api/users/me", REMOTE_ADDR=ip, **bearer(value))


# --- what a service account is ------------------------------------------------------------------------------


def test_a_service_account_is_made_with_no_usable_password_no_address_and_an_event_naming_its_creator(
    service_account, staff_user
):
    account_user = service_account.user
    assert not account_user.has_usable_password()
    assert account_user.email == ""
    assert is_service_account(account_user)
    assert not is_service_account(staff_user)
    [event] = TokenEvent.objects.filter(user=account_user)
    assert (event.kind, event.actor, event.detail) == (
        TokenEvent.Kind.ACCOUNT_CREATED,
        staff_user,
        "team payments",
    )


def test_nobody_signs_in_as_a_service_account_even_once_an_administrator_gave_it_a_password(
    fresh_throttle, client, service_account
):
    account_user = service_account.user
    account_user.set_password(PASSWORD)
    account_user.save()
    response = sign_in(client, "payments-sync", PASSWORD)
    assert response.status_code == 200  # the form again, with its error
    assert "_auth_user_id" not in client.session
    assert client.get("/profile/").status_code == 302


def test_the_password_reset_never_mails_a_link_for_a_service_account_whatever_address_it_has(
    fresh_throttle, client, service_account, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    account_user = service_account.user
    account_user.email = "integrations@example.org"
    account_user.set_password(PASSWORD)
    account_user.save()
    response = client.post("/accounts/password_reset/", {"email": "integrations@example.org"})
    # The same answer as for any address, and no mail.
    assert response.status_code == 302
    assert mail.outbox == []


def test_a_service_accounts_token_acts_with_the_accounts_permissions_not_its_managers(
    client, manager, service_account, account_token, viewer
):
    _token, value = account_token
    assert client.get("/api/users", **bearer(value)).status_code == 403
    service_account.user.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert client.get("/api/users", **bearer(value)).status_code == 200
    assert client.get("/api/users/me", **bearer(value)).json()["username"] == "payments-sync"


def test_a_deactivated_service_accounts_tokens_are_refused_on_the_next_request(
    client, service_account, account_token, staff_user
):
    _token, value = account_token
    assert use(client, value).status_code == 200
    assert service_account.set_active(False, actor=staff_user)
    assert use(client, value).status_code == 401
    assert service_account.set_active(True, actor=staff_user)
    assert use(client, value).status_code == 200
    kinds = list(
        TokenEvent.objects.filter(user=service_account.user, token=None)
        .values_list("kind", "actor")
        .order_by("pk")
    )
    assert kinds[1:] == [("account_deactivated", staff_user.pk), ("account_activated", staff_user.pk)]


# --- who manages --------------------------------------------------------------------------------------------


def test_a_manager_is_a_member_of_the_team_holding_the_role_and_active(user, other_user, service_account):
    team = service_account.team
    managed = ServiceAccount.objects.managed_by
    assert list(managed(user)) == []
    user.groups.add(team)  # a member without the role
    assert list(managed(user)) == []
    ManagerRole.objects.create(team=team, user=other_user)  # the role without membership
    assert list(managed(other_user)) == []
    ManagerRole.objects.create(team=team, user=user)
    assert list(managed(user)) == [service_account]
    assert list(service_account.managers()) == [user]
    user.is_active = False
    user.save()
    assert list(managed(user)) == []
    assert list(service_account.managers()) == []


def test_a_provider_group_named_after_the_team_grants_the_role_to_the_teams_members(
    user, service_account, settings
):
    settings.SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX = "-sa-managers"
    role_group = Group.objects.create(name="payments-sa-managers")
    user.groups.add(role_group)
    assert list(ServiceAccount.objects.managed_by(user)) == []  # not in the team itself
    user.groups.add(service_account.team)
    assert list(ServiceAccount.objects.managed_by(user)) == [service_account]
    assert list(service_account.managers()) == [user]
    assert not ServiceAccount.objects.without_active_manager().exists()
    settings.SERVICE_ACCOUNT_MANAGER_GROUP_SUFFIX = ""
    assert list(ServiceAccount.objects.managed_by(user)) == []


def test_a_service_account_manages_nothing_itself(service_account):
    make_manager(service_account.user, service_account.team)
    assert list(ServiceAccount.objects.managed_by(service_account.user)) == []


@pytest.mark.parametrize("departure", ["left the team", "lost the role", "deactivated"])
def test_a_manager_who_leaves_loses_the_pages_at_once_and_the_token_keeps_working(
    client, manager_client, manager, service_account, account_token, departure
):
    token, value = account_token
    assert manager_client.get(f"{PAGES}/{token.pk}/").status_code == 200
    if departure == "left the team":
        manager.groups.remove(service_account.team)
    elif departure == "lost the role":
        ManagerRole.objects.filter(user=manager).delete()
    else:
        manager.is_active = False
        manager.save()
    for page in (
        f"{PAGES}/{token.pk}/",
        f"{PAGES}/{token.pk}/rotate/",
        f"{PAGES}/service-accounts/{service_account.pk}/new/",
    ):
        response = manager_client.get(page)
        # A deactivated person's session is gone (sign-in page); anyone else gets 404.
        assert response.status_code in ((302,) if departure == "deactivated" else (404,)), page
    assert manager_client.post(f"{PAGES}/{token.pk}/revoke/").status_code in (302, 404)
    assert Token.objects.get(pk=token.pk).revoked_at is None
    assert use(client, value).status_code == 200


# --- the pages, as a manager meets them ---------------------------------------------------------------------


def test_integrations_show_a_section_per_managed_account_with_its_tokens_in_use(
    manager_client, service_account, account_token, issue, other_user, team
):
    revoked, _ = issue(service_account.user, name="old-sync")
    revoked.revoke(actor=other_user)
    elsewhere = ServiceAccount.objects.create_account(
        username="hr-export", team=Group.objects.create(name="hr")
    )
    page = manager_client.get(f"{PAGES}/").content.decode()
    assert f'id="service-account-{service_account.pk}"' in page
    assert "nightly-sync" in page and "old-sync" not in page
    assert f"{PAGES}/service-accounts/{service_account.pk}/new/" in page
    assert "hr-export" not in page and f"service-account-{elsewhere.pk}" not in page


def test_a_manager_creates_a_token_for_the_account_with_the_create_form_and_sees_it_once(
    manager_client, manager, service_account, client
):
    form = manager_client.get(f"{PAGES}/service-accounts/{service_account.pk}/new/")
    assert form.status_code == 200
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.content.decode()).group(1)
    data = {"name": "ledger", "purpose": "", "expiry": "30d", "custom_expiry": "", "nonce": nonce}
    reveal = manager_client.post(f"{PAGES}/service-accounts/{service_account.pk}/new/", data)
    assert reveal.status_code == 200, reveal.content.decode()[:2000]
    assert "no-store" in reveal["Cache-Control"]
    value = re.search(r'value="(bpt_[^"]+)"', reveal.content.decode()).group(1)
    token = Token.objects.get(name="ledger")
    assert token.user == service_account.user
    created = token.events.get(kind=TokenEvent.Kind.CREATED)
    assert (created.user, created.actor) == (service_account.user, manager)
    # Shown once: the token's page never shows the value again.
    assert value not in manager_client.get(f"{PAGES}/{token.pk}/").content.decode()
    assert client.get("/api/users/me", **bearer(value)).json()["username"] == "payments-sync"


def test_every_change_a_manager_makes_on_the_pages_is_recorded_with_their_name(
    manager_client, manager, account_token
):
    token, _value = account_token
    assert manager_client.post(f"{PAGES}/{token.pk}/rename/", {"name": "ledger-sync"}).status_code == 303
    rotate = manager_client.get(f"{PAGES}/{token.pk}/rotate/").content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', rotate).group(1)
    response = manager_client.post(
        f"{PAGES}/{token.pk}/rotate/",
        {"overlap": "none", "expiry": "same", "custom_expiry": "", "nonce": nonce},
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    new = Token.objects.get(replaces=token)
    assert manager_client.post(f"{PAGES}/{new.pk}/revoke/").status_code == 303
    events = TokenEvent.objects.filter(token__in=[token, new]).exclude(kind=TokenEvent.Kind.CREATED)
    assert {event.kind for event in events} == {"renamed", "rotated", "revoked"}
    assert {event.actor_id for event in events} == {manager.pk}


def test_the_accounts_activity_page_is_for_its_managers_only(
    manager_client, client, other_user, service_account, account_token
):
    token, _value = account_token
    token.rename("renamed by a manager", actor=other_user)
    page = manager_client.get(f"{PAGES}/service-accounts/{service_account.pk}/activity/")
    assert page.status_code == 200
    assert "renamed by a manager" in page.content.decode() and "by bob" in page.content.decode()
    client.force_login(other_user)
    assert client.get(f"{PAGES}/service-accounts/{service_account.pk}/activity/").status_code == 404


def test_a_person_who_manages_nothing_sees_no_accounts_and_gets_404_for_their_tokens(
    client, other_user, service_account, account_token
):
    token, _value = account_token
    client.force_login(other_user)
    assert "Service account" not in client.get(f"{PAGES}/").content.decode()
    assert client.get(f"{PAGES}/{token.pk}/").status_code == 404
    assert client.get(f"{PAGES}/service-accounts/{service_account.pk}/new/").status_code == 404


# --- the policy ---------------------------------------------------------------------------------------------


def test_service_account_tokens_may_have_their_own_longest_lifetime(service_account, user, policy):
    policy.service_account_maximum_lifetime = timedelta(days=730)
    policy.save()
    far = timezone.now() + timedelta(days=700)
    token, _value = Token.objects.issue(user=service_account.user, name="long", expires_at=far)
    assert token.expires_at == far
    with pytest.raises(ValidationError) as refused:
        Token.objects.issue(user=user, name="long", expires_at=far)
    assert "expires_at" in refused.value.message_dict


def test_a_service_account_token_without_expiry_needs_the_policy_and_an_address_allow_list(
    service_account, policy
):
    owner = service_account.user
    with pytest.raises(ValidationError) as refused:
        Token.objects.issue(user=owner, name="forever", expires_at=None, allowed_ips=["192.0.2.0/24"])
    assert "expires_at" in refused.value.message_dict
    policy.service_account_no_expiry = True
    policy.save()
    with pytest.raises(ValidationError) as refused:
        Token.objects.issue(user=owner, name="forever", expires_at=None)
    assert "allowed_ips" in refused.value.message_dict
    token, _value = Token.objects.issue(
        user=owner, name="forever", expires_at=None, allowed_ips=["192.0.2.0/24"]
    )
    # Nor can the allow-list be taken off afterwards.
    with pytest.raises(ValidationError):
        token.set_restrictions(allowed_ips=[], actor=owner)


# --- mails go to the managers -------------------------------------------------------------------------------


def test_expiry_reminders_of_an_accounts_tokens_go_to_each_manager_in_a_mail_of_their_own(
    manager, other_user, service_account, issue
):
    make_manager(other_user, service_account.team)
    issue(service_account.user, name="nightly-sync", days=2)
    call_command("notify_expiring_tokens", stdout=None)
    assert sorted(tuple(message.to) for message in mail.outbox) == [
        ("alice@example.com",),
        ("bob@example.com",),
    ]
    for message in mail.outbox:
        assert "nightly-sync" in message.body and 'service account "payments-sync"' in message.body


def test_new_address_alerts_of_an_accounts_token_go_to_each_manager(
    client, manager, other_user, service_account, account_token
):
    make_manager(other_user, service_account.team)
    _token, value = account_token
    use(client, value, "198.51.100.7")
    send_pending()
    assert sorted(tuple(message.to) for message in mail.outbox) == [
        ("alice@example.com",),
        ("bob@example.com",),
    ]
    assert all("198.51.100.7" in message.body for message in mail.outbox)


def test_a_service_account_token_rotating_itself_is_mailed_to_the_managers(
    client, manager, service_account, account_token
):
    _token, value = account_token
    response = client.post("/api/tokens/self/rotate", content_type="application/json", **bearer(value))
    assert response.status_code == 201
    [message] = mail.outbox
    assert message.to == ["alice@example.com"] and 'service account "payments-sync"' in message.body


# --- no manager left ----------------------------------------------------------------------------------------


def test_an_account_without_manager_is_told_once_to_the_teams_administrators(
    manager, service_account, staff_user, make_user
):
    team_admin = make_user("tess", is_staff=True)
    team_admin.groups.add(service_account.team)
    make_user("stranger", is_staff=True)  # staff, but not of this team
    call_command("notify_unmanaged_service_accounts", stdout=None)
    assert mail.outbox == []
    manager.groups.remove(service_account.team)
    call_command("notify_unmanaged_service_accounts", stdout=None)
    assert sorted(tuple(m.to) for m in mail.outbox) == [("sam@example.com",), ("tess@example.com",)]
    assert "payments-sync" in mail.outbox[0].subject
    call_command("notify_unmanaged_service_accounts", stdout=None)
    assert len(mail.outbox) == 2  # once per loss
    manager.groups.add(service_account.team)
    call_command("notify_unmanaged_service_accounts", stdout=None)
    manager.is_active = False
    manager.save()
    call_command("notify_unmanaged_service_accounts", stdout=None)
    assert len(mail.outbox) == 4  # a second loss is told again
    assert TokenEvent.objects.filter(user=service_account.user, kind="account_unmanaged").count() == 2


def test_moving_an_account_to_another_team_changes_its_managers_at_once_and_is_recorded(
    manager, other_user, service_account, staff_user
):
    ops = Group.objects.create(name="ops")
    make_manager(other_user, ops)
    assert service_account.move_to(ops, actor=staff_user)
    assert list(ServiceAccount.objects.managed_by(manager)) == []
    assert list(ServiceAccount.objects.managed_by(other_user)) == [service_account]
    event = TokenEvent.objects.get(user=service_account.user, kind="team_changed")
    assert (event.actor, event.detail) == (staff_user, "payments → ops")


# --- moving a person's token --------------------------------------------------------------------------------


def test_a_persons_token_moves_to_a_service_account_with_its_value_limits_and_history(
    client, user, other_user, service_account, issue
):
    make_manager(other_user, service_account.team)
    token, value = issue(user, name="legacy-sync", access="read", allowed_ips=["192.0.2.0/24"])
    assert use(client, value).status_code == 200
    call_command("move_token_to_service_account", str(token.pk), "payments-sync", stdout=None)
    token.refresh_from_db()
    assert token.user == service_account.user
    assert (token.access, token.allowed_ips, token.request_count >= 0) == ("read", ["192.0.2.0/24"], True)
    me = use(client, value).json()
    assert me["username"] == "payments-sync" and me["auth"]["token_id"] == token.pk
    assert token.events.filter(kind="created").get().user == service_account.user  # the history moved
    told = TokenEvent.objects.filter(kind="token_moved").values_list("user__username", flat=True)
    assert sorted(told) == ["alice", "bob", "payments-sync"]
    assert Token.objects.for_user(user).count() == 0


def test_moving_a_token_with_permissions_the_account_lacks_is_refused_and_changes_nothing(
    user, service_account, issue
):
    user.user_permissions.add(Permission.objects.get(codename="view_user"))
    token, _value = issue(user, name="users-reader", permissions=["auth.view_user"])
    with pytest.raises(CommandError, match="does not hold these permissions"):
        call_command("move_token_to_service_account", str(token.pk), "payments-sync", stdout=None)
    assert Token.objects.get(pk=token.pk).user == user
    assert not TokenEvent.objects.filter(kind="token_moved").exists()


def test_moving_a_revoked_token_or_to_an_unknown_account_is_refused(user, service_account, issue):
    token, _value = issue(user)
    with pytest.raises(CommandError, match="No service account named"):
        call_command("move_token_to_service_account", str(token.pk), "nobody", stdout=None)
    token.revoke(actor=user)
    with pytest.raises(CommandError, match="Only an active token"):
        call_command("move_token_to_service_account", str(token.pk), "payments-sync", stdout=None)

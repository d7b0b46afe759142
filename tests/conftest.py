"""Shared fixtures: users, the policy and tokens issued the only way the code allows."""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.utils import timezone

from tokens.models import (
    ExpirationPolicy,
    LegacyApiKey,
    ManagerRole,
    ServiceAccount,
    Token,
    TokenEvent,
    UsageRecord,
)

PASSWORD = "correct horse battery staple 42"

pytest_plugins = ["tests.secret_scan", "tests.identity.provider"]


@pytest.fixture
def make_user(django_user_model):
    def make(username="alice", **extra):
        return django_user_model.objects.create_user(
            username=username, password=PASSWORD, email=f"{username}@example.com", **extra
        )

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("bob")


@pytest.fixture
def viewer(make_user):
    """A user allowed to view other users (auth.view_user)."""
    viewer = make_user("victor")
    viewer.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    return viewer


@pytest.fixture
def staff_user(make_user):
    return make_user("sam", is_staff=True, is_superuser=True)


@pytest.fixture
def policy(db):
    return ExpirationPolicy.load()


@pytest.fixture
def issue(db):
    """Issue a token: issue(user, name="…", days=30) -> (token, plaintext)."""

    def issue(owner, name="ci", days=30, **extra):
        expires_at = None if days is None else timezone.now() + timedelta(days=days)
        return Token.objects.issue(user=owner, name=name, expires_at=expires_at, **extra)

    return issue


@pytest.fixture
def issued(user, issue):
    return issue(user)


def bearer(value):
    return {"HTTP_AUTHORIZATION": f"Bearer {value}"}


def _snapshot(*, tokens_only=False):
    """Everything a refused or hostile request could change: tokens, events, legacy keys, usage records.

    *tokens_only*: the tokens and their events only, for a request whose refusal is itself recorded as a use.
    """
    tokens = (
        list(Token.objects.order_by("pk").values()),
        list(TokenEvent.objects.order_by("pk").values()),
    )
    if tokens_only:
        return tokens
    return (
        *tokens,
        list(LegacyApiKey.objects.order_by("pk").values()),
        UsageRecord.objects.count(),
    )


def assert_clear_api_error(response, status):
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert body["detail"].strip() and "Traceback" not in body["detail"]
    return body


# --- sign-in ------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_throttle(db, settings):
    """An empty throttle, and a cheap hasher: these tests make dozens of sign-in attempts."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    cache.clear()
    yield
    cache.clear()


def sign_in(client, username, password, address="203.0.113.7"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


# --- legacy keys --------------------------------------------------------------------------------------------

ALICE_KEY = "a1b2c3d4e5f6-alice-legacy-key"
BOB_KEY = "f6e5d4c3b2a1-bob-legacy-key"
LINK = '</docs/migration/>; rel="deprecation"; type="text/plain"'


@pytest.fixture
def alice_key(user, policy):
    return LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)[0]


def me(client, key, **extra):
    return client.get("/api/users/me", headers={"Rest-Api-Key": key}, **extra)


def _set_policy(**fields):
    ExpirationPolicy.objects.filter(pk=1).update(**fields)


# --- service accounts ---------------------------------------------------------------------------------------


@pytest.fixture
def team(db):
    return Group.objects.create(name="payments")


@pytest.fixture
def service_account(team, staff_user):
    """A service account of the team "payments", made the way the admin makes one."""
    return ServiceAccount.objects.create_account(
        username="payments-sync", team=team, description="Nightly ledger sync", created_by=staff_user
    )


def make_manager(person, team):
    """Make *person* a member of *team* holding its manager role."""
    person.groups.add(team)
    ManagerRole.objects.create(team=team, user=person)


# A test about "today" (a day's bucket in a chart, one event a day) would see two days if midnight
# passed while it ran; it needs less than this to run.
LONGEST_DAY_TEST = timedelta(seconds=20)


@pytest.fixture
def clear_of_midnight():
    """Start the test on a day that lasts as long as the test: near midnight, wait for the new day.

    Midnight in the portal's TIME_ZONE, where its days begin. The wait is an Event's, not time.sleep:
    libfaketime, under which `make test-clock` runs these tests, breaks time.sleep on Python 3.11.
    """
    now = timezone.localtime()
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight - now < LONGEST_DAY_TEST:
        threading.Event().wait((midnight - now).total_seconds() + 0.5)

"""Shared fixtures: users, the policy and tokens issued the only way the code allows.

The plain helpers tests import by name (``bearer``, ``PASSWORD``…) are in tests/helpers.py.
"""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.utils import timezone

from tests.helpers import ALICE_KEY, PASSWORD, make_manager, signed_in_client
from tokens.models import LegacyApiKey, ServiceAccount, SitePolicy, Token


def pytest_collection_modifyitems(items):
    """Let every transactional test use each database alias, the SQLite usage connection included.

    On SQLite a usage record made outside a transaction goes through a second connection to the same
    file (``USAGE_DATABASE``, portal/settings.py), as it does in production. A test inside a transaction
    never reaches it; a transactional test (a live server, a browser, threads) does, and Django refuses
    an alias a test case did not list. On PostgreSQL "__all__" is the one database.
    """
    for item in items:
        marker = item.get_closest_marker("django_db")
        kwargs = dict(marker.kwargs) if marker is not None else {}
        transactional = kwargs.get("transaction") or {"transactional_db", "live_server"} & set(
            item.fixturenames
        )
        if transactional and "databases" not in kwargs:
            item.add_marker(pytest.mark.django_db(**kwargs, databases="__all__"), append=False)


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
    return SitePolicy.load()


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


# --- sign-in ------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_throttle(db, settings):
    """An empty throttle, and a cheap hasher: these tests make dozens of sign-in attempts."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    cache.clear()
    yield
    cache.clear()


# --- legacy keys --------------------------------------------------------------------------------------------


@pytest.fixture
def alice_key(user, policy):
    return LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)[0]


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


@pytest.fixture
def manager(user, service_account):
    """alice, a manager of the service account's team."""
    make_manager(user, service_account.team)
    return user


@pytest.fixture
def manager_client(manager):
    """A test client signed in as the manager; a client of its own, so a test may use ``client`` beside it."""
    return signed_in_client(manager)


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

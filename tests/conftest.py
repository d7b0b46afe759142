"""Shared fixtures: users, the policy and tokens issued the only way the code allows."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from tokens.models import ExpirationPolicy, Token

PASSWORD = "correct horse battery staple 42"

pytest_plugins = ["tests.secret_scan"]


@pytest.fixture
def make_user(django_user_model):
    def make(username="alice", **extra):
        return django_user_model.objects.create_user(username=username, password=PASSWORD,
                                                     email=f"{username}@example.com", **extra)

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

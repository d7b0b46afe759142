"""The sign-in page and PASSWORD_SIGN_IN: the provider's button first, passwords only where allowed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import mail

from tests.helpers import PASSWORD, sign_in
from tokens.models import AttemptCounter

ROOT = Path(__file__).resolve().parent.parent.parent
SENDING = "django.core.mail.backends.locmem.EmailBackend"


@pytest.fixture
def issuer_only(settings):
    """Provider sign-in configured (no provider needed: the sign-in page never calls it)."""
    settings.OIDC_ISSUER = "https://login.example.org/realms/staff"
    settings.OIDC_CLIENT_ID = "portal"
    settings.OIDC_CLIENT_SECRET = "secret"
    settings.OIDC_PROVIDER_NAME = "Example Corp"
    return settings


def test_the_sign_in_page_offers_the_provider_first(issuer_only, client, db):
    page = client.get("/accounts/login/?next=/profile/").content.decode()
    button = page.index("Sign in with Example Corp")
    assert button < page.index('name="password"')
    assert 'href="/accounts/oidc/start/?next=/profile/"' in page


def test_without_a_provider_the_page_is_the_password_form_alone(client, db):
    page = client.get("/accounts/login/").content.decode()
    assert "Sign in with" not in page and 'name="password"' in page


def test_with_passwords_off_there_is_no_password_way_in(issuer_only, client, fresh_throttle, staff_user):
    issuer_only.PASSWORD_SIGN_IN = "off"
    issuer_only.EMAIL_BACKEND = SENDING
    page = client.get("/accounts/login/").content.decode()
    assert 'name="password"' not in page and "password_reset" not in page
    # A refused POST changes nothing: no session, no throttle count.
    response = sign_in(client, staff_user.username, PASSWORD)
    assert response.status_code == 403 and "Sign in with Example Corp instead" in response.content.decode()
    assert "_auth_user_id" not in client.session and not AttemptCounter.objects.exists()
    admin = client.post("/admin/login/", {"username": staff_user.username, "password": PASSWORD})
    assert admin.status_code == 200 and "_auth_user_id" not in client.session
    for path in ("/accounts/password_reset/", "/accounts/reset/done/"):
        assert client.get(path).status_code == 404
    assert client.post("/accounts/password_reset/", {"email": staff_user.email}).status_code == 404
    assert mail.outbox == []


def test_with_passwords_for_staff_only_a_superuser_may_still_use_one(
    issuer_only, client, fresh_throttle, user, staff_user
):
    issuer_only.PASSWORD_SIGN_IN = "staff"
    page = client.get("/accounts/login/").content.decode()
    assert "Administrators: sign in with a password" in page
    assert sign_in(client, user.username, PASSWORD).status_code == 200
    assert "_auth_user_id" not in client.session
    assert sign_in(client, staff_user.username, PASSWORD)["Location"] == "/profile/"


def test_with_passwords_for_staff_only_reset_mails_reach_staff_only(
    issuer_only, client, fresh_throttle, user, staff_user
):
    issuer_only.PASSWORD_SIGN_IN = "staff"
    issuer_only.EMAIL_BACKEND = SENDING
    client.post("/accounts/password_reset/", {"email": user.email})
    assert mail.outbox == []
    client.post("/accounts/password_reset/", {"email": staff_user.email})
    assert [message.to for message in mail.outbox] == [[staff_user.email]]


def test_a_password_session_ends_when_passwords_are_switched_off(issuer_only, client, user):
    client.login(username=user.username, password=PASSWORD)
    assert client.get("/profile/").status_code == 200
    issuer_only.PASSWORD_SIGN_IN = "off"
    assert client.get("/profile/")["Location"].startswith("/accounts/login/")


# --- settings checked at start-up, one line each ------------------------------------------------------------

BAD = [
    ({"OIDC_ISSUER": "https//login.example.org"}, "OIDC_ISSUER", "issuer exactly"),
    ({"OIDC_ISSUER": "http://login.example.org"}, "OIDC_ISSUER", "localhost only"),
    ({"OIDC_ISSUER": "https://login.example.org", "OIDC_CLIENT_SECRET": "s"}, "OIDC_CLIENT_ID", "Register"),
    ({"OIDC_ISSUER": "https://login.example.org", "OIDC_CLIENT_ID": "c"}, "OIDC_CLIENT_SECRET", "Register"),
    ({"OIDC_SCOPES": "email profile"}, "OIDC_SCOPES", "openid"),
    ({"OIDC_GROUPS_CLAIM": "my groups"}, "OIDC_GROUPS_CLAIM", "OIDC_GROUPS_CLAIM=groups"),
    ({"PASSWORD_SIGN_IN": "sometimes"}, "PASSWORD_SIGN_IN", "PASSWORD_SIGN_IN=on"),
    ({"PASSWORD_SIGN_IN": "off"}, "PASSWORD_SIGN_IN", "lock people out"),
    ({"SUDO_MINUTES": "0"}, "SUDO_MINUTES", "SUDO_MINUTES=15"),
    ({"SUDO_MINUTES": "a while"}, "SUDO_MINUTES", "SUDO_MINUTES=15"),
]
OURS = ("OIDC_", "PASSWORD_SIGN_IN", "SUDO_MINUTES", "DATA_DIR")


def _check(tmp_path, env):
    base = {key: value for key, value in os.environ.items() if not key.startswith(OURS)}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, "DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("env, name, hint", BAD)
def test_a_sign_in_setting_that_cannot_work_stops_manage_py_with_one_line(tmp_path, env, name, hint):
    result = _check(tmp_path, env)
    assert result.returncode == 4
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert line.startswith(f"Configuration error: {name} ") and hint in line, line


def test_the_portal_starts_while_the_provider_is_unreachable(tmp_path):
    # Discovery is read at the first sign-in, not at start-up.
    env = {"OIDC_ISSUER": "http://127.0.0.1:9", "OIDC_CLIENT_ID": "c", "OIDC_CLIENT_SECRET": "s"}
    result = _check(tmp_path, env)
    assert result.returncode == 0, result.stderr

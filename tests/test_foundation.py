"""The ground: settings from the environment, health check, sign-in, static files, headers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from .conftest import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def _settings_in_subprocess(env, expression, tmp_path):
    code = f"import django, os; os.environ['DJANGO_SETTINGS_MODULE']='portal.settings'; from django.conf import settings; print({expression})"
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, "DATA_DIR": str(tmp_path), **env},
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_settings_honour_the_environment(tmp_path):
    out = _settings_in_subprocess(
        {"DEBUG": "true", "SECRET_KEY": "k" * 50, "ALLOWED_HOSTS": "a.example,b.example",
         "DATABASE_URL": "postgres://u:p@db.example:5433/tokens", "TIME_ZONE": "Europe/Paris",
         "TOKEN_PEPPERS": "1=" + "p" * 40 + ",2=" + "q" * 40},
        "settings.DEBUG, settings.SECRET_KEY == 'k'*50, settings.ALLOWED_HOSTS, settings.DATABASES['default']['HOST'],"
        " settings.DATABASES['default']['PORT'], settings.TIME_ZONE, sorted(settings.TOKEN_PEPPERS)",
        tmp_path,
    )
    assert out == "True True ['a.example', 'b.example'] db.example 5433 Europe/Paris ['1', '2']"


def test_debug_is_off_and_a_secret_key_is_generated_once_and_kept(tmp_path):
    first = _settings_in_subprocess({}, "settings.DEBUG, settings.SECRET_KEY", tmp_path)
    second = _settings_in_subprocess({}, "settings.DEBUG, settings.SECRET_KEY", tmp_path)
    assert first.startswith("False ") and len(first) > 50
    assert first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_argon2_hashes_passwords(user):
    assert user.password.startswith("argon2")


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.django_db
def test_healthz_answers_503_not_500_when_the_database_is_down(client, settings, monkeypatch):
    from django.db import OperationalError

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


@pytest.mark.django_db
def test_profile_redirects_anonymous_users_to_sign_in(client):
    response = client.get("/profile/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sign_in_works_through_the_real_form_with_csrf(user):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    page = browser.get(reverse("login"))
    token = page.cookies["csrftoken"].value
    refused = browser.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 403  # no CSRF token: refused
    response = browser.post(reverse("login"), {"username": "alice", "password": PASSWORD,
                                               "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == reverse("profile")
    assert browser.get("/profile/").status_code == 200


def test_wrong_password_shows_an_error_and_signs_nobody_in(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert client.get("/profile/").status_code == 302


def test_static_files_are_served_by_whitenoise_with_debug_off(client, settings):
    from django.templatetags.static import static

    assert settings.DEBUG is False
    url = static("css/portal.css")
    assert "portal." in url and url != "/static/css/portal.css"  # hashed name
    response = client.get(url)
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)
    assert "max-age=315360000" in response["Cache-Control"]


@pytest.mark.django_db
def test_pages_send_security_headers(client):
    response = client.get(reverse("login"))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "script-src 'self'" in response["Content-Security-Policy"]


@pytest.mark.django_db
def test_ensure_admin_prints_a_password_once(capsys, django_user_model):
    from django.core.management import call_command

    call_command("ensure_admin")
    first = capsys.readouterr().out
    assert "password:" in first
    password = first.split("password: ")[1].split()[0]
    admin = django_user_model.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)
    call_command("ensure_admin")
    assert capsys.readouterr().out == ""


@pytest.mark.django_db
def test_healthz_answers_head_requests_from_load_balancers(client):
    assert client.head("/healthz").status_code == 200


@pytest.mark.django_db
def test_the_migration_guide_is_served_to_get_and_head(client):
    response = client.get("/docs/migration/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert b"Authorization: Bearer" in response.content
    assert client.head("/docs/migration/").status_code == 200

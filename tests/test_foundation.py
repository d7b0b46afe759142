"""The ground: settings from the environment, health check, sign-in, static files, headers."""

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse

from .helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent


def _settings_in_subprocess(env, expression, tmp_path):
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='portal.settings'; "
        f"from django.conf import settings; print({expression})"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "ALLOWED_HOSTS")
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_settings_honour_the_environment(tmp_path):
    out = _settings_in_subprocess(
        {
            "DEBUG": "true",
            "SECRET_KEY": "k" * 50,
            "ALLOWED_HOSTS": "a.example,b.example",
            "DATABASE_URL": "postgres://u:p@db.example:5433/tokens",
            "TIME_ZONE": "Europe/Paris",
            "TOKEN_PEPPERS": "1=" + "p" * 40 + ",2=" + "q" * 40,
        },
        "settings.DEBUG, settings.SECRET_KEY == 'k'*50, settings.ALLOWED_HOSTS, "
        "settings.DATABASES['default']['HOST'],"
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
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(reverse("login"))
    token = page.cookies["csrftoken"].value
    refused = browser.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 403  # no CSRF token: refused
    response = browser.post(
        reverse("login"), {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and response["Location"] == reverse("profile")
    assert browser.get("/profile/").status_code == 200


def test_wrong_password_shows_an_error_and_signs_nobody_in(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    assert client.get("/profile/").status_code == 302


def test_static_files_are_served_by_whitenoise_with_debug_off(client, settings):
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


# --- settings a person can get wrong stop the process with one line ----------------------------------------

GOOD_PEPPER = "p" * 40
BAD_SETTINGS = [
    ({"TOKEN_PEPPERS": "1=x"}, "TOKEN_PEPPERS", "shorter than 32 characters"),
    ({"TOKEN_PEPPERS": "abc"}, "TOKEN_PEPPERS", "not of the form id=value"),
    ({"TOKEN_PEPPERS": f"²={GOOD_PEPPER}"}, "TOKEN_PEPPERS", "not a whole number"),
    ({"DATABASE_URL": "mysql://u:secret-pw@db/x"}, "DATABASE_URL", "PostgreSQL"),
    ({"DATABASE_URL": "postgres://u:secret-pw@db:port/x"}, "DATABASE_URL", "postgres://user:password@"),
    ({"CONN_MAX_AGE": "ten"}, "CONN_MAX_AGE", "whole number"),
    ({"DATABASE_LOCK_TIMEOUT": "\u00b2"}, "DATABASE_LOCK_TIMEOUT", "number of seconds"),
    ({"TRUSTED_PROXIES": "10.0.0.1,proxy.example"}, "TRUSTED_PROXIES", "'proxy.example'"),
    ({"SECURE_TLS": "ture"}, "SECURE_TLS", "SECURE_TLS=true"),
    ({"DEBUG": "maybe"}, "DEBUG", "neither true nor false"),
    ({"TIME_ZONE": "Mars/Olympus"}, "TIME_ZONE", "Europe/Paris"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "INFO"),
    ({"SITE_URL": "tokens.example.com"}, "SITE_URL", "https://"),
    ({"CSRF_TRUSTED_ORIGINS": "tokens.example.com"}, "CSRF_TRUSTED_ORIGINS", "scheme"),
    ({"EMAIL_URL": "carrier-pigeon://loft"}, "EMAIL_URL", "smtp"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "LOG_FORMAT=json"),
    ({"METRICS_ALLOWED_IPS": "prometheus.internal"}, "METRICS_ALLOWED_IPS", "'prometheus.internal'"),
    ({"METRICS_ENABLED": "perhaps"}, "METRICS_ENABLED", "neither true nor false"),
    (
        {"OIDC_FEDERATION_ISSUERS": "https://gitlab.com,http://ci.example"},
        "OIDC_FEDERATION_ISSUERS",
        "https://",
    ),
    (
        {"OIDC_FEDERATION_ISSUERS": "token.actions.githubusercontent.com"},
        "OIDC_FEDERATION_ISSUERS",
        "https://",
    ),
    ({"OIDC_FEDERATION_TIMEOUT": "0"}, "OIDC_FEDERATION_TIMEOUT", "OIDC_FEDERATION_TIMEOUT=3"),
    ({"API_FAILURES_PER_ADDRESS": "lots"}, "API_FAILURES_PER_ADDRESS", "API_FAILURES_PER_ADDRESS=30"),
    ({"SIGN_IN_FAILURES_PER_USERNAME": "0"}, "SIGN_IN_FAILURES_PER_USERNAME", "from 1 to 1000000"),
    ({"LEAK_REPORTS_PER_ADDRESS": "-5"}, "LEAK_REPORTS_PER_ADDRESS", "whole number of attempts"),
]


def _server_env(tmp_path, **env):
    drop = (
        "DEBUG",
        "SECRET_KEY",
        "DATABASE_URL",
        "ALLOWED_HOSTS",
        "TOKEN_PEPPERS",
        "CONN_MAX_AGE",
        "TRUSTED_PROXIES",
        "SECURE_TLS",
        "TIME_ZONE",
        "LOG_LEVEL",
        "SITE_URL",
        "EMAIL_URL",
    )
    base = {k: v for k, v in os.environ.items() if k not in drop}
    return {**base, "DATA_DIR": str(tmp_path / "data"), "DJANGO_SETTINGS_MODULE": "portal.settings", **env}


def _assert_one_line_refusal(output, name, hint):
    lines = [line for line in output.splitlines() if line.startswith("Configuration error:")]
    assert len(lines) >= 1, output
    assert all(line == lines[0] for line in lines), output  # each gunicorn process says the same
    assert lines[0].startswith(f"Configuration error: {name} ") and hint in lines[0], lines[0]
    assert "Traceback" not in output and "secret-pw" not in output, output


@pytest.mark.parametrize("env, name, hint", BAD_SETTINGS)
def test_a_setting_that_cannot_work_stops_manage_py_with_one_line_naming_it(tmp_path, env, name, hint):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=_server_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    _assert_one_line_refusal(result.stderr, name, hint)


@pytest.mark.parametrize("env, name, hint", [BAD_SETTINGS[0], BAD_SETTINGS[1], BAD_SETTINGS[7]])
def test_a_setting_that_cannot_work_stops_gunicorn_before_it_serves(tmp_path, env, name, hint):
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "portal.wsgi",
            "--bind",
            f"127.0.0.1:{_free_port()}",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=_server_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    _assert_one_line_refusal(result.stdout + result.stderr, name, hint)
    assert "Booting worker" not in result.stdout + result.stderr  # refused before any worker started


def test_a_pepper_value_may_end_with_equals_signs(tmp_path):
    out = _settings_in_subprocess(
        {"TOKEN_PEPPERS": f"1={GOOD_PEPPER}==,2={GOOD_PEPPER}"}, "settings.TOKEN_PEPPERS['1'][-2:]", tmp_path
    )
    assert out == "=="


# --- the data folder and the database are this account's only ----------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _modes(folder):
    return {path.name: oct(path.stat().st_mode & 0o777) for path in [folder, *folder.iterdir()]}


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_data_folder_and_every_file_in_it_are_private_whatever_the_umask(tmp_path, umask):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # made looser by hand, or by an older version
    env = _server_env(tmp_path)

    def run(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            preexec_fn=lambda: os.umask(umask),
        )

    run("migrate", "--noinput", "-v", "0")
    run("createcachetable")
    run("shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('svc')")
    value = run("create_token", "svc", "probe", "--days", "1").stdout.strip()
    port = _free_port()
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "gunicorn"),
            "portal.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(umask),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", "/api/users/me", headers={"Authorization": f"Bearer {value}"})
                status = connection.getresponse().status
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not start"
                time.sleep(0.2)
        assert status == 200
        modes = _modes(data)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert {
        "portal.sqlite3",
        "portal.sqlite3-wal",
        "portal.sqlite3-shm",
        "portal.sqlite3-usage.lock",
        "secret_key",
        "token_pepper",
    } <= set(modes), modes
    assert modes.pop("data") == "0o700"
    assert set(modes.values()) == {"0o600"}, modes

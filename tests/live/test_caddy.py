"""Debian's Caddy guards a small upstream API with the ``forward_auth`` block of docs/gateways.md.

The block is read from the documentation itself and used as it stands, with only its three addresses
(the site, the portal, the upstream) replaced by this test's own. Caddy runs in the foreground on a free
loopback port with a generated Caddyfile: no admin endpoint, its storage and configuration in a temporary
folder, stopped by the test; never the system service (``make test`` installs the package with apt-get).
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.db import connection

from tokens.models import UsageRecord

from .helpers import Client, GunicornServer, database_url, free_port
from .test_gateway import Upstream, bearer

DOCS = Path(settings.BASE_DIR) / "docs" / "gateways.md"
SITE = "api.example.com"
GLOBAL_OPTIONS = """{{
    admin off
    default_bind 127.0.0.1
    auto_https off
    storage file_system {{
        root {dir}/storage
    }}
}}
"""


def documented_block():
    """Return the Caddyfile block of docs/gateways.md's Caddy section."""
    section = DOCS.read_text().split("### Caddy", 1)[1]
    return re.search(r"```caddyfile\n(.*?)```", section, re.S).group(1)


class SiteClient(Client):
    """A client that asks for the guarded site by its name, as any client of api.example.com does."""

    def request(self, method, path, *, headers=None, body=None):
        return super().request(method, path, headers={"Host": SITE, **(headers or {})}, body=body)


class Caddy:
    """Debian's caddy in the foreground, on a free port, with everything of its own under *folder*."""

    def __init__(self, *, portal_port, upstream_port):
        binary = shutil.which("caddy") or "/usr/bin/caddy"
        if not os.access(binary, os.X_OK):
            pytest.fail("caddy is not installed: `make test` installs it (apt-get install caddy)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="portal-caddy-"))
        self.port = free_port()
        block = (
            documented_block()
            .replace(SITE, f"http://{SITE}:{self.port}")
            .replace("portal.internal:8000", f"127.0.0.1:{portal_port}")
            .replace("your-api:8080", f"127.0.0.1:{upstream_port}")
        )
        (self.dir / "Caddyfile").write_text(GLOBAL_OPTIONS.format(dir=self.dir) + block)
        self.process = None

    def start(self):
        env = {
            **os.environ,
            "HOME": str(self.dir),
            "XDG_DATA_HOME": str(self.dir / "data"),
            "XDG_CONFIG_HOME": str(self.dir / "config"),
        }
        command = [self.binary, "run", "--config", str(self.dir / "Caddyfile"), "--adapter", "caddyfile"]
        self.log = (self.dir / "caddy.log").open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                SiteClient(self.port, timeout=2).get("/nothing")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"caddy did not start:\n{self.output()}")

    def output(self):
        path = self.dir / "caddy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def caddy(django_db_setup, django_db_blocker, live_log_dir):
    """Caddy on a free port, asking a real gunicorn (which trusts it) before proxying to the upstream."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    # ALLOWED_HOSTS is the live servers' own (127.0.0.1, localhost): nothing is added for Caddy.
    with mock.patch.dict(os.environ, {"TRUSTED_PROXIES": "127.0.0.1/32"}):
        portal = GunicornServer(url, workers=2, log_dir=live_log_dir).start()
    caddy = None
    try:
        caddy = Caddy(portal_port=portal.port, upstream_port=upstream.port).start()
        caddy.upstream = upstream
        yield caddy
    finally:
        if caddy is not None:
            caddy.stop()
        portal.stop()
        upstream.shutdown()
        upstream.server_close()


@pytest.fixture
def through(caddy):
    """A client of the guarded API, through Caddy, by the site's name; the upstream's log starts empty."""
    caddy.upstream.seen.clear()
    client = SiteClient(caddy.port)
    yield client
    client.close()


def test_the_documented_block_lets_a_valid_token_through_under_the_sites_own_host_name(
    through, caddy, user, issue
):
    token, value = issue(user)
    # The client asks for the site by a name the portal does not serve: Caddy must not pass it on.
    response = through.get("/orders/42?expand=lines", headers=bearer(value))
    assert response.status == 200, (response, caddy.output())
    seen = response.json()
    assert (seen["method"], seen["path"]) == ("GET", "/orders/42?expand=lines")
    assert seen["headers"]["x-auth-user-id"] == str(user.pk)
    assert seen["headers"]["x-auth-username"] == "alice"
    assert seen["headers"]["x-auth-token-id"] == str(token.pk)
    assert seen["headers"]["x-auth-method"] == "bearer"
    assert seen["headers"]["x-auth-access"] == "read_write"
    assert "authorization" not in seen["headers"]  # the token stops at the gateway
    record = UsageRecord.objects.get(token=token)
    assert (record.method, record.path, record.ip, record.accepted) == (
        "GET",
        "/orders/42",
        "127.0.0.1",
        True,
    )


def test_refusals_come_back_from_the_portal_and_never_reach_the_upstream(through, caddy, user, issue):
    _, read_only = issue(user, name="read only", access="read")
    missing = through.get("/orders/42")
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
    assert through.get("/orders/42", headers=bearer(read_only)).status == 200
    assert through.request("POST", "/orders", headers=bearer(read_only), body={"item": "tea"}).status == 403
    assert [s["method"] for s in caddy.upstream.seen] == ["GET"]


def test_a_client_stating_its_own_original_method_through_caddy_gets_400(through, caddy, user, issue):
    token, read_only = issue(user, name="read only", access="read")
    # Caddy sets X-Forwarded-Method: POST and passes the client's X-Original-Method: GET on.
    response = through.request(
        "POST", "/orders", headers=bearer(read_only, **{"X-Original-Method": "GET"}), body={"item": "tea"}
    )
    assert response.status == 400
    assert response.json()["error"] == "invalid_request"
    assert caddy.upstream.seen == []
    assert not UsageRecord.objects.filter(token=token).exists()

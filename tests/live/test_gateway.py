"""A real nginx guards a small upstream API with ``auth_request`` to /forward-auth on a real gunicorn.

nginx is Debian's (``make test`` installs it with apt-get), started here with a generated configuration on
free loopback ports and its own prefix, pid and logs under a temporary folder; never the system service.
The configuration is the one docs/gateways.md gives. The upstream is a Python http.server thread that
answers with what it received, so the tests see what a guarded API would see.
"""

import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from tests import secret_scan
from tokens.models import Token, UsageRecord
from tokens.usage.read import usage_totals

from .helpers import Client, GunicornServer, database_url, free_port

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream portal {{ server 127.0.0.1:{portal}; keepalive 8; }}
    upstream orders {{ server 127.0.0.1:{upstream}; }}

    server {{
        listen 127.0.0.1:{port};

        # docs/gateways.md, nginx: the subrequest to the portal, without the client's body.
        location = /_forward_auth {{
            internal;
            proxy_pass http://portal/forward-auth$forward_auth_query;
            proxy_set_header Host 127.0.0.1;  # a name in the portal's ALLOWED_HOSTS
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}

        location / {{
            set $forward_auth_query "";
            auth_request /_forward_auth;
            auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
            auth_request_set $auth_username $upstream_http_x_auth_username;
            auth_request_set $auth_token_id $upstream_http_x_auth_token_id;
            auth_request_set $auth_access $upstream_http_x_auth_access;
            proxy_set_header X-Auth-User-Id $auth_user_id;
            proxy_set_header X-Auth-Username $auth_username;
            proxy_set_header X-Auth-Token-Id $auth_token_id;
            proxy_set_header X-Auth-Access $auth_access;
            proxy_set_header Authorization "";
            proxy_pass http://orders;
        }}

        # A route that needs a permission of the token's owner.
        location /users/ {{
            set $forward_auth_query "?permission=auth.view_user";
            auth_request /_forward_auth;
            proxy_set_header Authorization "";
            proxy_pass http://orders;
        }}
    }}
}}
"""


class Upstream(http.server.ThreadingHTTPServer):
    """The guarded API: answers every request with its method, path and headers, and counts them."""

    daemon_threads = True

    def __init__(self):
        self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(handler):
                length = int(handler.headers.get("Content-Length") or 0)
                body = handler.rfile.read(length).decode() if length else ""
                seen = {
                    "method": handler.command,
                    "path": handler.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in handler.headers.items()},
                }
                self.seen.append(seen)
                data = json.dumps(seen).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]


class Nginx:
    """Debian's nginx in the foreground, on a free port, with everything of its own under *folder*."""

    def __init__(self, *, portal_port, upstream_port):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.access(binary, os.X_OK):
            pytest.fail("nginx is not installed: `make test` installs it (apt-get install nginx)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="portal-nginx-"))
        self.dir.chmod(0o755)  # nginx's workers may run as another user
        self.port = free_port()
        conf = NGINX_CONF.format(dir=self.dir, portal=portal_port, upstream=upstream_port, port=self.port)
        (self.dir / "nginx.conf").write_text(conf)
        self.process = None

    def start(self):
        command = [
            self.binary,
            "-p",
            str(self.dir),
            "-c",
            str(self.dir / "nginx.conf"),
            "-e",
            str(self.dir / "error.log"),
        ]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                Client(self.port, timeout=2).get("/_nothing_")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{self.log()}")

    def log(self):
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: the master ends its workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for log in ("access.log", "error.log"):
            secret_scan.observe_log_file(self.dir / log)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(django_db_setup, django_db_blocker, live_log_dir):
    """nginx on a free port, asking a real gunicorn (which trusts it) before proxying to the upstream."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    upstream = Upstream()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    # The portal believes X-Original-* and X-Forwarded-For from nginx on loopback only.
    with mock.patch.dict(os.environ, {"TRUSTED_PROXIES": "127.0.0.1/32"}):
        portal = GunicornServer(url, workers=2, log_dir=live_log_dir).start()
    nginx = None
    try:
        nginx = Nginx(portal_port=portal.port, upstream_port=upstream.port).start()
        nginx.upstream = upstream
        yield nginx
    finally:
        if nginx is not None:
            nginx.stop()
        portal.stop()
        upstream.shutdown()
        upstream.server_close()


@pytest.fixture
def through(gateway):
    """A client of the guarded API, through nginx; the upstream's log starts empty."""
    gateway.upstream.seen.clear()
    client = Client(gateway.port)
    yield client
    client.close()


def bearer(value, **headers):
    return {"Authorization": f"Bearer {value}", **headers}


def test_a_valid_token_reaches_the_upstream_which_is_told_who_calls(through, gateway, user, issue):
    token, value = issue(user)
    response = through.get("/orders/42?expand=lines", headers=bearer(value))
    assert response.status == 200, response
    seen = response.json()
    assert (seen["method"], seen["path"]) == ("GET", "/orders/42?expand=lines")
    assert seen["headers"]["x-auth-user-id"] == str(user.pk)
    assert seen["headers"]["x-auth-username"] == "alice"
    assert seen["headers"]["x-auth-token-id"] == str(token.pk)
    assert seen["headers"]["x-auth-access"] == "read_write"
    assert "authorization" not in seen["headers"]  # the token stops at the gateway
    posted = through.request("POST", "/orders", headers=bearer(value), body={"item": "tea"})
    assert posted.status == 200
    assert posted.json()["body"] == '{"item": "tea"}'  # the body reaches the upstream, not the portal


def test_refusals_never_reach_the_upstream(through, gateway, user, issue):
    _, read_only = issue(user, name="read only", access="read")
    _, bound = issue(user, name="bound", allowed_ips=["192.0.2.0/24"])
    missing = through.get("/orders/42")
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
    forged = through.get("/orders/42", headers=bearer("bpt_" + "A" * 52))
    assert forged.status == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]
    assert through.get("/orders/42", headers=bearer(read_only)).status == 200
    assert through.request("POST", "/orders", headers=bearer(read_only), body={"item": "tea"}).status == 403
    assert through.request("DELETE", "/orders/42", headers=bearer(read_only)).status == 403
    # The client's address is what the trusted proxies say: here a proxy in front of nginx names it.
    inside = through.get("/orders/42", headers=bearer(bound, **{"X-Forwarded-For": "192.0.2.5"}))
    assert inside.status == 200
    outside = through.get("/orders/42", headers=bearer(bound, **{"X-Forwarded-For": "198.51.100.7"}))
    assert outside.status == 403
    assert through.get("/orders/42", headers=bearer(bound)).status == 403  # from 127.0.0.1 itself
    assert [s["method"] for s in gateway.upstream.seen] == ["GET", "GET"]


def test_a_route_needing_a_permission_lets_only_tokens_that_have_it_through(through, make_user, issue):
    owner = make_user("olga")
    owner.user_permissions.add(Permission.objects.get(codename="view_user", content_type__app_label="auth"))
    _, full = issue(owner, name="full")
    _, narrowed = issue(owner, name="narrowed", permissions=[])
    assert through.get("/users/7", headers=bearer(full)).status == 200
    assert through.get("/users/7", headers=bearer(narrowed)).status == 403
    assert through.get("/orders/1", headers=bearer(narrowed)).status == 200  # other routes need nothing


def test_a_revoke_takes_effect_on_the_very_next_request_through_nginx(through, user, issue):
    token, value = issue(user)
    assert through.get("/orders/42", headers=bearer(value)).status == 200
    token.revoke(actor=user, ip=None)
    after = through.get("/orders/42", headers=bearer(value))
    assert after.status == 401
    assert "revoked" in after.headers["www-authenticate"]


def test_usage_records_carry_the_original_method_path_and_client_address(through, user, issue):
    token, value = issue(user, access="read")
    through.get("/orders/42?expand=lines", headers=bearer(value, **{"User-Agent": "shop-app/2.1"}))
    through.request(
        "PATCH",
        "/orders/42",
        headers=bearer(value, **{"X-Forwarded-For": "203.0.113.9"}),
        body={"state": "paid"},
    )
    records = list(UsageRecord.objects.filter(token=token).order_by("pk"))
    assert [(r.method, r.path, r.status, r.accepted, r.ip) for r in records] == [
        ("GET", "/orders/42", 200, True, "127.0.0.1"),
        ("PATCH", "/orders/42", 403, False, "203.0.113.9"),
    ]
    assert records[0].user_agent == "shop-app/2.1"
    [token] = usage_totals([Token.objects.get(pk=token.pk)])  # summaries + records not summarised yet
    assert token.request_count == 1
    assert token.last_used_at is not None

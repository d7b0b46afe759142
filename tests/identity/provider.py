"""A real OpenID Connect provider for the tests: the npm package oidc-provider, run by Node.

``make oidc-provider`` (a step of ``make test``) installs it into .cache/npm/oidc-provider. Each
provider is started on a free port with a generated configuration (tests/identity/provider.mjs): one
client for the portal (client_secret_basic, PKCE required, RP-initiated logout back to the portal),
and two people whose groups a test can change at the provider (``set_groups``). It is stopped by its
process id when the test session ends.

``sign_in_at_provider`` drives the provider's own login and consent pages with plain HTTP, for tests
that check the portal's side without a browser; tests/browser/ drives the same pages in Chromium.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent.parent
MODULE = ROOT / ".cache" / "npm" / "oidc-provider" / "node_modules" / "oidc-provider" / "lib" / "index.js"
SCRIPT = Path(__file__).resolve().parent / "provider.mjs"
CLIENT_ID = "token-portal"
CLIENT_SECRET = "tests-only-client-secret-0123456789abcdef"
CALLBACK = "/accounts/oidc/callback/"

PEOPLE = {
    "ada": {
        "email": "ada@example.org",
        "email_verified": True,
        "given_name": "Ada",
        "family_name": "Lovelace",
        "name": "Ada Lovelace",
        "preferred_username": "ada",
        "groups": ["engineering", "portal-admins"],
    },
    "grace": {
        "email": "grace@example.org",
        "email_verified": True,
        "given_name": "Grace",
        "family_name": "Hopper",
        "name": "Grace Hopper",
        "preferred_username": "grace",
        "groups": ["engineering"],
    },
}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningProvider:
    """One oidc-provider process: its issuer, and the people file it reads at every sign-in."""

    def __init__(self, folder, *, sites, id_token_claims):
        if not shutil.which("node") or not MODULE.exists():
            pytest.fail("The OpenID provider for the tests is not installed: run `make oidc-provider`.")
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.people_file = Path(folder) / "people.json"
        self.reset_people()
        config = {
            "module": str(MODULE),
            "issuer": self.issuer,
            "port": self.port,
            "people_file": str(self.people_file),
            "id_token_claims": id_token_claims,
            "client": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [f"{site}{CALLBACK}" for site in sites],
                "post_logout_redirect_uris": [f"{site}/accounts/login/" for site in sites],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
        }
        config_file = Path(folder) / "provider.json"
        config_file.write_text(json.dumps(config))
        self.log = open(Path(folder) / "provider.log", "w+")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), str(config_file)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                self.stop()
                pytest.fail(f"oidc-provider did not start:\n{self.log.read()[-3000:]}")
            time.sleep(0.1)

    def reset_people(self):
        self.people_file.write_text(json.dumps(PEOPLE))

    def set_groups(self, login, groups):
        """Change *login*'s groups at the provider, as its administrator would."""
        people = json.loads(self.people_file.read_text())
        people[login]["groups"] = list(groups)
        self.people_file.write_text(json.dumps(people))

    def configure(self, settings, **extra):
        """Point the portal's *settings* (pytest-django's fixture) at this provider."""
        settings.OIDC_ISSUER = self.issuer
        settings.OIDC_CLIENT_ID = CLIENT_ID
        settings.OIDC_CLIENT_SECRET = CLIENT_SECRET
        settings.OIDC_PROVIDER_NAME = "Example Corp"
        settings.OIDC_SCOPES = "openid email profile groups"
        settings.OIDC_GROUPS_CLAIM = "groups"
        settings.OIDC_STAFF_GROUPS = ["portal-admins"]
        settings.OIDC_SUPERUSER_GROUPS = []
        settings.PASSWORD_SIGN_IN = "on"
        for name, value in extra.items():
            setattr(settings, name, value)
        return self

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def provider_factory():
    """Start providers on demand, one per (sites, ID-token claims) set, and stop them all at the end."""
    folder = tempfile.mkdtemp(prefix="portal-oidc-provider-")
    started = {}

    def start(*sites, id_token_claims=False):
        key = (sites, id_token_claims)
        if key not in started:
            started[key] = RunningProvider(
                tempfile.mkdtemp(dir=folder), sites=sites, id_token_claims=id_token_claims
            )
        started[key].reset_people()
        return started[key]

    yield start
    for running in started.values():
        running.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def oidc(provider_factory, settings, db):
    """The portal configured for a running provider, for Django's test client (host "testserver")."""
    return provider_factory("http://testserver").configure(settings)


# --- driving the provider's own pages over plain HTTP -------------------------------------------------------


def _form_action(html):
    match = re.search(r'<form[^>]*action="([^"]+)"', html)
    assert match, html[:2000]
    return unescape(match[1])


def sign_in_at_provider(location, login, *, browser=None, portal="http://testserver"):
    """Follow the portal's redirect *location* through the provider's login and consent as *login*.

    Return the portal URL the provider sends the browser back to (path and query: the callback).
    *browser* is a requests.Session standing for the browser's cookies at the provider (new if None),
    so a second attempt can reuse the provider's session.
    """
    browser = browser or requests.Session()
    url, data = location, None
    for _ in range(12):
        response = (
            browser.post(url, data=data, allow_redirects=False)
            if data is not None
            else browser.get(url, allow_redirects=False)
        )
        data = None
        if response.is_redirect:
            url = requests.compat.urljoin(url, response.headers["Location"])
            if url.startswith(portal):
                parts = urlsplit(url)
                return f"{parts.path}?{parts.query}"
            continue
        assert response.status_code == 200, (response.status_code, response.text[:2000])
        action = requests.compat.urljoin(url, _form_action(response.text))
        if 'value="login"' in response.text:
            url, data = action, {"prompt": "login", "login": login, "password": "any password"}
        else:
            url, data = action, {"prompt": "consent"}
    raise AssertionError("the provider never sent the browser back to the portal")

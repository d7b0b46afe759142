"""SCIM deactivation under traffic, on real gunicorn: a token in use stops on its very next request.

A client uses a person's token in a loop while the identity provider sends ``active: false`` through SCIM.
Every request that starts after SCIM has answered is refused with 401, on whichever worker (and node) it
lands: nothing about the owner is cached in a process. The main server runs on this run's database (SQLite,
or PostgreSQL with DATABASE_URL); the two nodes always on a throw-away PostgreSQL cluster.
"""

import json
import secrets
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from tokens.models import Token, TokenEvent

pytestmark = pytest.mark.live

PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_HEADERS = {"Content-Type": "application/scim+json"}

PROVIDER_SETUP = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone
from tokens.models import Token
provider = get_user_model().objects.create_user(username={username!r})
provider.user_permissions.add(Permission.objects.get(codename="scim_provision"))
_token, value = Token.objects.issue(user=provider, name="SCIM", expires_at=timezone.now() + timedelta(days=1))
print(json.dumps({{"value": value, "secrets": [value]}}))
"""

PERSON_TOKEN = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from tokens.models import Token
person = get_user_model().objects.get(pk={pk})
_token, value = Token.objects.issue(user=person, name="laptop", expires_at=timezone.now() + timedelta(days=1))
print(json.dumps({{"value": value, "secrets": [value]}}))
"""


def _issue(user, name):
    _token, value = Token.objects.issue(user=user, name=name, expires_at=timezone.now() + timedelta(days=1))
    return value


def provision(server, scim_token, user_name):
    """Create a person through SCIM on *server*; return their id."""
    body = {"schemas": [USER], "userName": user_name, "externalId": f"ext-{user_name}", "active": True}
    created = server.client().request(
        "POST", "/scim/v2/Users", headers={**SCIM_HEADERS, "Authorization": f"Bearer {scim_token}"}, body=body
    )
    assert created.status == 201, created
    return created.json()["id"]


def deactivate(server, scim_token, person_id):
    ops = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    return server.client().request(
        "PATCH",
        f"/scim/v2/Users/{person_id}",
        headers={**SCIM_HEADERS, "Authorization": f"Bearer {scim_token}"},
        body=json.dumps(ops),
    )


class TokenInUse(threading.Thread):
    """Call /api/users/me with *value* in a loop, noting when each request started and what it got."""

    def __init__(self, servers, value):
        super().__init__(daemon=True)
        self.servers = servers
        self.headers = {"Authorization": f"Bearer {value}"}
        self.answers = []  # (started, status)
        self.stop = threading.Event()

    def run(self):
        clients = [server.client() for server in self.servers]
        deadline = time.monotonic() + 60  # bounded, whatever happens
        turn = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            client = clients[turn % len(clients)]
            turn += 1
            started = time.monotonic()
            self.answers.append((started, client.get("/api/users/me", headers=self.headers).status))

    def wait_for_answers(self, count, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.answers) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.answers) >= count, self.answers


def deactivate_under_traffic(servers, scim_server, scim_token, person_value, person_id):
    """Deactivate through *scim_server* while the token is in use on *servers*; check every answer."""
    loop = TokenInUse(servers, person_value)
    loop.start()
    try:
        loop.wait_for_answers(10)
        response = deactivate(scim_server, scim_token, person_id)
        answered = time.monotonic()
        assert response.status == 200, response
        assert response.json()["active"] is False
        seen = len(loop.answers)
        loop.wait_for_answers(seen + 12)
    finally:
        loop.stop.set()
        loop.join(timeout=60)
    before = [status for started, status in loop.answers if started < answered]
    after = [status for started, status in loop.answers if started >= answered]
    assert set(before) <= {200, 401} and 200 in before
    # Every request that began after SCIM answered was refused: the very next one, on every worker.
    assert after and set(after) == {401}, after


def test_scim_active_false_stops_a_token_in_use_on_the_next_request(main_server):
    User = get_user_model()
    provider = User.objects.create_user(username="idp")
    provider.user_permissions.add(Permission.objects.get(codename="scim_provision"))
    scim_token = _issue(provider, "SCIM")
    person_id = provision(main_server, scim_token, "leaver@example.org")
    person = User.objects.get(pk=person_id)
    value = _issue(person, "laptop")

    deactivate_under_traffic([main_server], main_server, scim_token, value, person_id)

    event = TokenEvent.objects.get(user=person, kind=TokenEvent.Kind.DEACTIVATED)
    assert event.actor == provider
    assert Token.objects.filter(user=person).count() == 1  # nothing erased


def test_scim_through_one_node_stops_the_token_on_every_node(postgres_nodes, throwaway_postgres):
    node_a, node_b = postgres_nodes
    setup = PROVIDER_SETUP.format(username=f"idp-{secrets.token_hex(4)}")
    scim_token = throwaway_postgres.django(setup)["value"]
    person_id = provision(node_a, scim_token, f"leaver-{secrets.token_hex(4)}@example.org")
    value = throwaway_postgres.django(PERSON_TOKEN.format(pk=int(person_id)))["value"]

    deactivate_under_traffic([node_a, node_b], node_a, scim_token, value, person_id)

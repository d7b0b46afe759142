"""Several nodes: two gunicorn servers sharing one PostgreSQL database.

Nothing about a credential is cached in a process, so a change made through one node (or straight in
the database) is seen by the other on its very next request, whichever worker answers it.
"""

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from tests import secret_scan

pytestmark = pytest.mark.live

# Runs inside the cluster's Django (manage.py shell) so the data is made by the project's own managers.
SETUP = """
import json
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from tokens.models import LegacyApiKey, Token
user = get_user_model().objects.create_user(username={username!r}, password="a long enough password 1")
token, value = Token.objects.issue(user=user, name="shared by the nodes",
                                   expires_at=timezone.now() + timedelta(days=1))
key = {key!r}
if key:
    LegacyApiKey.objects.import_key(user=user, key=key)
print(json.dumps({{"user": user.pk, "token": token.pk, "value": value, "secrets": [value]}}))
"""


def make_owner(cluster, *, key=""):
    if key:
        secret_scan.track(key, kind="key")
    return cluster.django(SETUP.format(username=f"node-{secrets.token_hex(4)}", key=key))


def every_worker(node, path, headers, times=6):
    """Ask *node* several times, so each of its workers answers at least once in practice."""
    return [node.client().get(path, headers=headers) for _ in range(times)]


def test_a_token_revoked_through_one_node_is_refused_by_the_other_on_the_very_next_request(
    postgres_nodes, throwaway_postgres
):
    node_a, node_b = postgres_nodes
    owner = make_owner(throwaway_postgres)
    headers = {"Authorization": f"Bearer {owner['value']}"}
    assert {r.status for r in every_worker(node_b, "/api/users/me", headers)} == {200}

    revoked = node_a.client().request("DELETE", f"/api/tokens/{owner['token']}", headers=headers)
    assert revoked.status == 204

    answers = every_worker(node_b, "/api/users/me", headers)
    assert {r.status for r in answers} == {401}
    assert all("revoked" in r.json()["detail"] for r in answers)
    assert 'error="invalid_token"' in answers[0].headers["www-authenticate"]
    # And node A, which revoked it, agrees.
    assert node_a.client().get("/api/users/me", headers=headers).status == 401


def test_a_deactivated_owner_is_refused_by_every_node_on_the_very_next_request(
    postgres_nodes, throwaway_postgres
):
    node_a, node_b = postgres_nodes
    owner = make_owner(throwaway_postgres)
    headers = {"Authorization": f"Bearer {owner['value']}"}
    assert {r.status for r in every_worker(node_a, "/api/users/me", headers)} == {200}
    assert {r.status for r in every_worker(node_b, "/api/users/me", headers)} == {200}

    throwaway_postgres.sql("UPDATE auth_user SET is_active = false WHERE id = %s", [owner["user"]])

    for node in (node_a, node_b):
        answers = every_worker(node, "/api/users/me", headers)
        assert {r.status for r in answers} == {401}
        assert all("deactivated" in r.json()["detail"] for r in answers)


def test_legacy_keys_switched_off_in_the_policy_are_refused_by_every_node_on_the_very_next_request(
    postgres_nodes, throwaway_postgres
):
    node_a, node_b = postgres_nodes
    key = "legacy-" + secrets.token_urlsafe(24)
    make_owner(throwaway_postgres, key=key)
    headers = {"Rest-Api-Key": key}
    answers = every_worker(node_b, "/api/users/me", headers)
    assert {r.status for r in answers} == {200}
    assert answers[0].json()["auth"]["method"] == "legacy_key"
    assert "deprecation" in answers[0].headers and "link" in answers[0].headers

    throwaway_postgres.sql("UPDATE tokens_sitepolicy SET security_level = 'high' WHERE id = 1")
    try:
        for node in (node_b, node_a):
            answers = every_worker(node, "/api/users/me", headers)
            assert {r.status for r in answers} == {401}
            assert all("switched off" in r.json()["detail"] for r in answers)
            assert all("Bearer" in r.json()["detail"] for r in answers)
    finally:
        throwaway_postgres.sql("UPDATE tokens_sitepolicy SET security_level = 'compatibility' WHERE id = 1")
    # Switched back on: accepted again at once, on both nodes.
    assert node_a.client().get("/api/users/me", headers=headers).status == 200
    again = node_b.client().get("/api/users/me", headers=headers)
    assert json.loads(again.body)["auth"]["method"] == "legacy_key"


def test_a_rotated_tokens_old_value_works_on_every_node_until_the_end_of_its_overlap_then_nowhere(
    postgres_nodes, throwaway_postgres
):
    node_a, node_b = postgres_nodes
    owner = make_owner(throwaway_postgres)
    old = {"Authorization": f"Bearer {owner['value']}"}
    rotated = node_a.client().request("POST", "/api/tokens/self/rotate", headers=old, body={"overlap": 3})
    assert rotated.status == 201
    secret_scan.track(rotated.json()["token"])
    new = {"Authorization": f"Bearer {rotated.json()['token']}"}
    ends = datetime.fromisoformat(
        node_b.client().get(f"/api/tokens/{owner['token']}", headers=new).json()["rotation_ends_at"]
    )
    # The new value works at once on the other node; the old one on both, saying when it stops.
    assert {r.status for r in every_worker(node_b, "/api/users/me", new)} == {200}
    seen = set()
    while datetime.now(UTC) < ends + timedelta(seconds=1):
        for node in (node_a, node_b):
            before = datetime.now(UTC)
            answer = node.client().get("/api/users/me", headers=old)
            after = datetime.now(UTC)
            if after < ends:
                assert answer.status == 200
                assert parsedate_to_datetime(answer.headers["sunset"]) == ends.replace(microsecond=0)
                seen.add("served")
            elif before >= ends:
                # Refused: 401, or 429 once this client has met the API failure limit.
                assert answer.status in (401, 429) and "sunset" not in answer.headers
                seen.add("refused")
        time.sleep(0.1)
    assert seen == {"served", "refused"}
    for node in (node_a, node_b):
        assert {r.status for r in every_worker(node, "/api/users/me", old)} <= {401, 429}
        assert node.client().get("/api/users/me", headers=new).status == 200

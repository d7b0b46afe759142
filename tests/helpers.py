"""Plain helpers the tests import: request headers, snapshots, sign-in, the legacy keys' values.

Fixtures live in conftest.py, which pytest loads by itself; what a test imports by name lives here, so no
test module imports a conftest.
"""

from django.test import Client

from tokens.models import LegacyApiKey, ManagerRole, SitePolicy, Token, TokenEvent, UsageRecord

PASSWORD = "correct horse battery staple 42"

# The Keyless CI page's form for a trust policy pinned to one repository and branch of GitHub Actions.
TRUST_POLICY_FORM = {
    "name": "deploy",
    "issuer": "https://token.actions.githubusercontent.com",
    "audience": "https://tokens.example.com",
    "conditions": "repository = octo-org/octo-repo\nref = refs/heads/main\n",
    "access": "read",
    "permission_scope": "all",
    "allowed_ips": "",
    "token_lifetime": "15",
    "max_live_tokens": "10",
}


def signed_in_client(person):
    """Return a test client of its own signed in as *person*, so a test's ``client`` is left as it is."""
    signed_in = Client()
    signed_in.force_login(person)
    return signed_in


def bearer(value):
    """Return the test client's keyword argument that sends *value* as a bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {value}"}


def _snapshot(*, tokens_only=False):
    """Everything a refused or hostile request could change: tokens, events, legacy keys, usage records.

    *tokens_only*: the tokens and their events only, for a request whose refusal is itself recorded as a use.
    """
    tokens = (
        list(Token.objects.order_by("pk").values()),
        list(TokenEvent.objects.order_by("pk").values()),
    )
    if tokens_only:
        return tokens
    return (
        *tokens,
        list(LegacyApiKey.objects.order_by("pk").values()),
        UsageRecord.objects.count(),
    )


def assert_clear_api_error(response, status):
    """Assert *response* is a JSON error of *status* a client can read, and return its body."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) >= {"error", "detail"}
    assert body["detail"].strip() and "Traceback" not in body["detail"]
    return body


def sign_in(client, username, password, address="203.0.113.7"):
    """Post the sign-in form from *address*, as a person at a browser would."""
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


ALICE_KEY = "a1b2c3d4e5f6-alice-legacy-key"
BOB_KEY = "f6e5d4c3b2a1-bob-legacy-key"
# The Link header that points a legacy key's user at the migration guide.
LINK = '</docs/migration/>; rel="deprecation"; type="text/plain"'


def me(client, key, **extra):
    """Call /api/users/me with the legacy key *key*."""
    return client.get("/api/users/me", headers={"Rest-Api-Key": key}, **extra)


def _set_policy(**fields):
    """Change the policy's *fields* in the database, past its validation."""
    SitePolicy.objects.filter(pk=1).update(**fields)


def make_manager(person, team):
    """Make *person* a member of *team* holding its manager role."""
    person.groups.add(team)
    ManagerRole.objects.create(team=team, user=person)

"""GitHub secret scanning: requests signed exactly as GitHub signs them (tokens/github.py, its endpoint)."""

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tokens.models import Token, TokenEvent

from .helpers import bearer

pytestmark = pytest.mark.django_db

ENDPOINT = "/api/secret-scanning/github"
KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


def public_pem(private_key):
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def github_key(tmp_path, settings):
    """A key pair standing in for GitHub's, its public half in GitHub's keys document on disk."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    keys = {
        "public_keys": [
            {"key_identifier": "old-key", "key": public_pem(other), "is_current": False},
            {"key_identifier": KEY_ID, "key": public_pem(private_key), "is_current": True},
        ]
    }
    path = tmp_path / "github-keys.json"
    path.write_text(json.dumps(keys))
    settings.GITHUB_SECRET_SCANNING_KEYS = str(path)
    return private_key


def sign(private_key, body):
    """Sign *body* as GitHub does: ECDSA P-256 over SHA-256, DER, base64."""
    return base64.b64encode(private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


def post(client, body, *, key_id=KEY_ID, signature=None):
    headers = {}
    if key_id is not None:
        headers["HTTP_GITHUB_PUBLIC_KEY_IDENTIFIER"] = key_id
    if signature is not None:
        headers["HTTP_GITHUB_PUBLIC_KEY_SIGNATURE"] = signature
    return client.post(ENDPOINT, body, content_type="application/json", **headers)


def matches(*values):
    return json.dumps(
        [
            {
                "token": v,
                "type": "bpt_portal_token",
                "url": f"https://github.com/o/r/blob/main/f{i}",
                "source": "content",
            }
            for i, v in enumerate(values)
        ]
    ).encode()


def test_a_request_signed_like_github_is_verified_and_answered_in_githubs_format(
    client, user, issue, github_key, mailoutbox
):
    active, active_value = issue(user, name="ci")
    revoked, revoked_value = issue(user, name="old")
    revoked.revoke(actor=user)
    made_up = "bpt_" + "Z" * 52
    body = matches(active_value, revoked_value, made_up)

    response = post(client, body, signature=sign(github_key, body))

    assert response.status_code == 200
    assert response.json() == [
        {
            "token_hash": hashlib.sha256(active_value.encode()).hexdigest(),
            "token_type": "bpt_portal_token",
            "label": "true_positive",
        },
        {
            "token_hash": hashlib.sha256(revoked_value.encode()).hexdigest(),
            "token_type": "bpt_portal_token",
            "label": "false_positive",
        },
        {
            "token_hash": hashlib.sha256(made_up.encode()).hexdigest(),
            "token_type": "bpt_portal_token",
            "label": "false_positive",
        },
    ]
    active.refresh_from_db()
    assert active.revoked_at is not None
    event = TokenEvent.objects.get(token=active, kind=TokenEvent.Kind.REVOKED)
    where = "GitHub secret scanning (content) · https://github.com/o/r/blob/main/f0"
    assert event.detail == f"reported leaked · {where}"
    [mail] = mailoutbox
    assert "GitHub secret scanning" in mail.body and active_value not in mail.body
    # The owner's Activity Stream says why, and where GitHub found it.
    client.force_login(user)
    stream = " ".join(client.get("/profile/").content.decode().split())
    assert (
        "because it was reported leaked: GitHub secret scanning (content) · https://github.com/o/r/blob/main/f0"
        in stream
    )


def test_a_value_in_its_rotation_overlap_is_a_true_positive_and_ends_with_its_self_rotation(
    client, user, issue, github_key, mailoutbox
):
    _old, old_value = issue(user, name="ci")
    response = client.post(
        "/api/tokens/self/rotate", {"overlap": 3600}, content_type="application/json", **bearer(old_value)
    )
    new = response.json()
    body = matches(old_value)

    answer = post(client, body, signature=sign(github_key, body))

    assert answer.json()[0]["label"] == "true_positive"
    assert client.get("/api/users/me", **bearer(old_value)).status_code == 401
    assert client.get("/api/users/me", **bearer(new["token"])).status_code == 401
    assert Token.objects.get(pk=new["id"]).status == "revoked"
    assert f"…{new['last_characters']}" in mailoutbox[-1].body


@pytest.mark.parametrize(
    "how",
    [
        "unsigned",
        "no key id",
        "unknown key id",
        "other key",
        "body changed",
        "garbage signature",
        "non-ascii signature",
        "huge signature",
    ],
)
def test_a_missing_or_bad_signature_is_401_and_changes_nothing(client, user, issue, github_key, how):
    token, value = issue(user)
    body = matches(value)
    good = sign(github_key, body)
    kwargs = {
        "unsigned": {"signature": None},
        "no key id": {"signature": good, "key_id": None},
        "unknown key id": {"signature": good, "key_id": "nope"},
        "other key": {"signature": good, "key_id": "old-key"},
        "body changed": {"signature": sign(github_key, body + b" ")},
        "garbage signature": {"signature": "not base64!"},
        "non-ascii signature": {"signature": "MEUCIQ\u00e9"},
        "huge signature": {"signature": "A" * 100_000},
    }[how]

    response = post(client, body, **kwargs)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
    token.refresh_from_db()
    assert token.revoked_at is None
    assert not TokenEvent.objects.filter(kind=TokenEvent.Kind.REVOKED).exists()


def test_without_a_usable_keys_file_every_request_is_refused(
    client, user, issue, github_key, settings, tmp_path
):
    token, value = issue(user)
    body = matches(value)
    signature = sign(github_key, body)
    broken = tmp_path / "broken.json"
    broken.write_text('{"public_keys": [{"key_identifier": "x", "key": "not a pem"}]}')
    for path in ("", str(tmp_path / "missing.json"), str(broken)):
        settings.GITHUB_SECRET_SCANNING_KEYS = path
        assert post(client, body, signature=signature).status_code == 401
    assert Token.objects.get(pk=token.pk).revoked_at is None


def test_a_signed_but_malformed_body_is_400(client, github_key):
    for body in (b"{}", b"[1]", b'[{"token": 5}]', b"not json", b"[" * 50_000 + b"]" * 50_000):
        response = post(client, body, signature=sign(github_key, body))
        assert response.status_code == 400, body[:20]

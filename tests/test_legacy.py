"""Legacy API keys: the CSV import, weak keys refused, and no key ever shown.

Their authentication is in test_auth.py; the Deprecation, Sunset and Link headers and the usage records
of their uses in test_middleware.py.
"""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from tokens.models import LegacyApiKey

from .helpers import ALICE_KEY, BOB_KEY, _set_policy, me

pytestmark = pytest.mark.django_db


def run_import(tmp_path, text, *options):
    """Run import_legacy_keys on a file holding *text*; return (stdout, stderr, CommandError or None)."""
    path = tmp_path / "keys.csv"
    path.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_legacy_keys", str(path), *options, stdout=out, stderr=err)
    except CommandError as error:
        return out.getvalue(), err.getvalue(), error
    return out.getvalue(), err.getvalue(), None


# --- import -------------------------------------------------------------------------------------------------


def test_a_good_file_imports_every_key_as_a_digest_and_never_prints_one(tmp_path, user, other_user):
    out, err, error = run_import(tmp_path, f"username,key\nalice,{ALICE_KEY}\nbob,{BOB_KEY}\n")
    assert error is None
    assert "Imported 2 key(s); 0 already imported." in out
    assert ALICE_KEY not in out + err and BOB_KEY not in out + err
    assert LegacyApiKey.objects.find(ALICE_KEY).user == user
    assert LegacyApiKey.objects.find(BOB_KEY).user == other_user
    stored = " ".join(str(v) for row in LegacyApiKey.objects.values() for v in row.values())
    assert ALICE_KEY not in stored and BOB_KEY not in stored


def test_importing_the_same_file_again_imports_nothing_new_and_says_so(tmp_path, user, other_user):
    text = f"username,key\nalice,{ALICE_KEY}\nbob,{BOB_KEY}\n"
    run_import(tmp_path, text)
    out, _err, error = run_import(tmp_path, text)
    assert error is None
    assert "Imported 0 key(s); 2 already imported." in out and "Nothing new to import." in out
    assert LegacyApiKey.objects.count() == 2


BAD_FILE = (
    "username,key\n"
    f"alice,{ALICE_KEY}\n"  # line 2: good
    "nobody,some-key-000000000000\n"  # line 3: unknown user
    "alice,\n"  # line 4: empty key
    f"bob,{ALICE_KEY}\n"  # line 5: the same key as line 2
    "alice,taken-by-bob-0000000000\n"  # line 6: already imported for bob
    "alice\n"  # line 7: one column
    ",orphan-key-00000000000\n"  # line 8: no username
    "bob, padded-key-0000000000 \n"  # line 9: surrounding spaces
)


def test_every_bad_row_is_reported_by_its_line_and_nothing_is_imported(tmp_path, user, other_user):
    LegacyApiKey.objects.import_key(user=other_user, key="taken-by-bob-0000000000")
    out, err, error = run_import(tmp_path, BAD_FILE)
    assert error is not None and "7 bad row(s)" in str(error) and "--skip-invalid" in str(error)
    assert err.splitlines() == [
        "line 3: unknown user 'nobody'",
        "line 4: empty key",
        "line 5: duplicate key: the same key as line 2",
        "line 6: this key is already imported for another user",
        "line 7: expected 2 columns (username,key), found 1",
        "line 8: empty username",
        "line 9: A key must be 1 to 200 printable ASCII characters without surrounding spaces.",
    ]
    assert LegacyApiKey.objects.count() == 1
    assert LegacyApiKey.objects.find(ALICE_KEY) is None
    assert ALICE_KEY not in out + err + str(error)


def test_skip_invalid_imports_the_good_rows_and_reports_the_rest(tmp_path, user, other_user):
    LegacyApiKey.objects.import_key(user=other_user, key="taken-by-bob-0000000000")
    out, err, error = run_import(tmp_path, BAD_FILE, "--skip-invalid")
    assert error is None
    assert "Imported 1 key(s); 0 already imported; skipped 7 bad row(s)." in out
    assert "line 3: unknown user 'nobody'" in err
    assert LegacyApiKey.objects.find(ALICE_KEY).user == user


@pytest.mark.parametrize("text", ["user,key\nalice,x\n", "key,username\n", "", "username;key\nalice;x\n"])
def test_a_file_without_the_header_row_is_refused(tmp_path, user, text):
    _out, _err, error = run_import(tmp_path, text)
    assert error is not None and "header row: username,key" in str(error)
    assert not LegacyApiKey.objects.exists()


def test_keys_can_be_read_from_standard_input(user, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"username,key\nalice,{ALICE_KEY}\n"))
    out = io.StringIO()
    call_command("import_legacy_keys", "-", stdout=out)
    assert "Imported 1 key(s)" in out.getvalue()
    assert LegacyApiKey.objects.find(ALICE_KEY).user == user


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_legacy_keys", str(tmp_path / "missing.csv"))


# --- weak keys, and no key ever shown -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, reason",
    [
        ("k", "at least 16 characters"),
        ("short-key-123", "at least 16 characters"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "two kinds"),
        ("1234567890123456789", "two kinds"),
        ("abababab12121212", "different characters"),
    ],
)
def test_a_weak_key_is_refused_at_import_with_a_message_for_its_row_and_is_not_imported(
    tmp_path, user, key, reason
):
    text = f"username,key\nalice,{ALICE_KEY}\nalice,{key}\n"
    out, err, error = run_import(tmp_path, text, "--skip-invalid")
    assert error is None
    assert "line 3:" in err and reason in err
    assert len(key) < 12 or key not in err + out  # the message names the row, never the key
    assert LegacyApiKey.objects.count() == 1
    with pytest.raises(ValidationError):
        LegacyApiKey.objects.import_key(user=user, key=key)
    assert LegacyApiKey.objects.count() == 1


def test_no_response_or_page_ever_carries_a_key(client, alice_key, user, staff_user):
    responses = [me(client, ALICE_KEY), client.get("/api/tokens", headers={"Rest-Api-Key": ALICE_KEY})]
    _set_policy(security_level="high")
    responses.append(me(client, ALICE_KEY))
    client.force_login(user)
    responses += [
        client.get(url)
        for url in ("/profile/", "/profile/integrations/authorizations/", "/api/users/me", "/docs/migration/")
    ]
    client.force_login(staff_user)
    responses += [
        client.get(url)
        for url in (
            "/admin/tokens/legacyapikey/",
            f"/admin/tokens/legacyapikey/{alice_key.pk}/change/",
            "/admin/tokens/legacyapikey/migration/",
        )
    ]
    for response in responses:
        assert response.status_code in (200, 401)
        blob = response.content.decode() + "".join(f"{k}: {v}" for k, v in response.items())
        assert ALICE_KEY not in blob and alice_key.digest not in blob

"""Legacy API keys: the CSV import, deprecated-but-working authentication, sunset, and no key ever shown."""

import io
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tokens.models import ExpirationPolicy, LegacyApiKey, TokenEvent, UsageRecord
from tokens.models.usage import usage_totals

pytestmark = pytest.mark.django_db

ALICE_KEY = "a1b2c3d4e5f6-alice-legacy-key"
BOB_KEY = "f6e5d4c3b2a1-bob-legacy-key"
LINK = '</docs/migration/>; rel="deprecation"; type="text/plain"'


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


@pytest.fixture
def alice_key(user, policy):
    return LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)[0]


def me(client, key, **extra):
    return client.get("/api/users/me", headers={"Rest-Api-Key": key}, **extra)


def _set_policy(**fields):
    ExpirationPolicy.objects.filter(pk=1).update(**fields)


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


# --- authentication -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Rest-Api-Key", "rest-api-key", "REST-API-KEY", "rEsT-aPi-KeY"])
def test_a_legacy_key_authenticates_as_its_owner_in_any_header_case(client, alice_key, header):
    response = client.get("/api/users/me", headers={header: ALICE_KEY})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["auth"]["method"] == "legacy_key"


def test_the_owner_acts_with_its_own_permissions_through_a_legacy_key(client, alice_key, viewer):
    assert client.get("/api/users", headers={"Rest-Api-Key": ALICE_KEY}).status_code == 403
    LegacyApiKey.objects.import_key(user=viewer, key=BOB_KEY)
    assert client.get("/api/users", headers={"Rest-Api-Key": BOB_KEY}).status_code == 200


def test_bearer_wins_when_both_headers_are_sent(client, alice_key, other_user, issue):
    token, value = issue(other_user)
    response = client.get("/api/users/me", headers={"Rest-Api-Key": ALICE_KEY, **_auth(value)})
    assert response.json()["username"] == "bob"
    assert response.json()["auth"]["method"] == "bearer"
    for header in ("Deprecation", "Sunset", "Link"):
        assert header not in response
    assert list(UsageRecord.objects.values_list("token_id", "legacy_key_id")) == [(token.pk, None)]
    # A bad bearer token is refused even with a good key beside it: no fallback to the weaker credential.
    refused = client.get("/api/users/me", headers={"Rest-Api-Key": ALICE_KEY, **_auth(value[:-1] + ("x" if value[-1] != "x" else "y"))})
    assert refused.status_code == 401


def _auth(value):
    return {"Authorization": f"Bearer {value}"}


def test_every_legacy_response_is_marked_deprecated_with_a_sunset_and_a_link(client, alice_key):
    deprecated = timezone.now().replace(microsecond=0) - timedelta(days=10)
    sunset = (timezone.now() + timedelta(days=60)).replace(microsecond=0)
    _set_policy(legacy_deprecated_at=deprecated, legacy_sunset_at=sunset)
    for response in (
        me(client, ALICE_KEY),
        client.get("/api/tokens/999", headers={"Rest-Api-Key": ALICE_KEY}),
    ):
        assert response.status_code in (200, 404)
        assert response["Deprecation"] == f"@{int(deprecated.timestamp())}"
        assert response["Sunset"].endswith(" GMT")
        assert parsedate_to_datetime(response["Sunset"]) == sunset
        assert response["Link"] == LINK


def test_without_a_sunset_date_no_sunset_header_is_sent(client, alice_key):
    _set_policy(legacy_sunset_at=None)
    response = me(client, ALICE_KEY)
    assert response.status_code == 200
    assert "Sunset" not in response
    assert response["Deprecation"].startswith("@") and response["Link"] == LINK


def test_the_link_points_to_the_migration_guide(client, alice_key):
    target = me(client, ALICE_KEY)["Link"].split(">")[0].lstrip("<")
    guide = client.get(target)
    assert guide.status_code == 200
    text = guide.content.decode()
    for needle in (
        "Authorization: Bearer",
        "Rest-Api-Key",
        "curl",
        "import requests",
        "Sunset",
        "Deprecation",
    ):
        assert needle in text


@pytest.mark.parametrize(
    "policy_change, detail",
    [
        ({"legacy_sunset_at": "past"}, "Legacy API keys reached their sunset. Use a bearer token"),
        ({"legacy_keys_accepted": False}, "Legacy API keys are switched off. Use a bearer token"),
    ],
)
def test_after_the_sunset_or_when_switched_off_a_key_gets_401_telling_to_use_a_bearer_token(
    client, alice_key, policy_change, detail
):
    if policy_change.get("legacy_sunset_at") == "past":
        _set_policy(
            legacy_deprecated_at=timezone.now() - timedelta(days=90),
            legacy_sunset_at=timezone.now() - timedelta(seconds=1),
        )
    else:
        _set_policy(**policy_change)
    response = me(client, ALICE_KEY)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["detail"].startswith(detail)
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert "Use a bearer token" in response["WWW-Authenticate"]
    assert response["Link"] == LINK
    record = UsageRecord.objects.get()
    assert (record.legacy_key_id, record.accepted, record.status) == (alice_key.pk, False, 401)
    alice_key.refresh_from_db()
    assert alice_key.request_count == 0


def test_a_sunset_in_the_future_still_lets_keys_in(client, alice_key):
    _set_policy(legacy_sunset_at=timezone.now() + timedelta(minutes=5))
    assert me(client, ALICE_KEY).status_code == 200


def test_a_revoked_key_is_refused_at_once(client, alice_key, staff_user):
    assert me(client, ALICE_KEY).status_code == 200
    alice_key.revoke(actor=staff_user)
    response = me(client, ALICE_KEY)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"] and "bearer token" in response.json()["detail"]


def test_an_unknown_key_and_a_deactivated_owner_are_refused(client, alice_key, user):
    assert me(client, "not-a-key-anyone-was-given").status_code == 401
    user.is_active = False
    user.save()
    assert me(client, ALICE_KEY).status_code == 401


def test_every_use_is_recorded_with_client_details_and_one_activity_event_a_day(client, alice_key, user):
    for _ in range(3):
        me(client, ALICE_KEY, HTTP_USER_AGENT="old-cron/1.0", REMOTE_ADDR="198.51.100.4")
    records = UsageRecord.objects.filter(legacy_key=alice_key)
    assert records.count() == 3
    assert {(r.user_id, r.accepted, r.status, r.ip, r.user_agent, r.path) for r in records} == {
        (user.pk, True, 200, "198.51.100.4", "old-cron/1.0", "/api/users/me")
    }
    alice_key.refresh_from_db()
    usage_totals([alice_key])
    assert alice_key.request_count == 3
    assert (alice_key.last_used_ip, alice_key.last_used_user_agent) == ("198.51.100.4", "old-cron/1.0")
    assert alice_key.last_used_at is not None
    events = TokenEvent.objects.filter(legacy_key=alice_key, kind="legacy_used")
    assert events.count() == 1
    assert events.get().user == user and events.get().detail == timezone.now().date().isoformat()


def test_no_response_or_page_ever_carries_a_key(client, alice_key, user, staff_user):
    responses = [me(client, ALICE_KEY), client.get("/api/tokens", headers={"Rest-Api-Key": ALICE_KEY})]
    _set_policy(legacy_keys_accepted=False)
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


def test_a_legacy_key_survives_pepper_rotation_by_being_re_digested_on_use(client, user, settings):
    from tokens import credentials

    old = dict(settings.TOKEN_PEPPERS)
    LegacyApiKey.objects.import_key(user=user, key=ALICE_KEY)
    settings.TOKEN_PEPPERS = {**old, "9": "n" * 40}  # step 1 of the rotation: a newer pepper
    assert me(client, ALICE_KEY).status_code == 200
    row = LegacyApiKey.objects.get()
    assert row.pepper_id == 9 and row.digest == credentials.digest(ALICE_KEY, credentials.peppers()[0])
    settings.TOKEN_PEPPERS = {"9": "n" * 40}  # step 3: the old pepper retired
    assert me(client, ALICE_KEY).status_code == 200


def test_an_unknown_or_malformed_key_is_pointed_to_the_migration_guide(client, policy):
    for key in ("not-a-key-anyone-was-given", "tab\tinside"):
        response = me(client, key)
        assert response.status_code == 401
        assert response["Link"] == LINK
        assert "bearer token" in response.json()["detail"] or "malformed" in response.json()["detail"]
    assert "Link" not in client.get("/api/users/me", HTTP_AUTHORIZATION="Bearer bpt_nope")

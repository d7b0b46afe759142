"""Hostile input through the whole Django stack (middleware, CSRF, views, templates).

Every hostile request must get a 4xx with a clear message, change nothing in the database, and never
come back unescaped. A few of these go through a real gunicorn in tests/live/test_hostile_http.py. The
sign-in throttle and the API failure limit are in test_throttle.py.
"""

import json
import string

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokens import credentials
from tokens.constants import TOKEN_PREFIX
from tokens.models import AttemptCounter, RefusedClient, Token, UsageRecord

from .helpers import _snapshot, assert_clear_api_error, bearer, sign_in, signed_in_client

MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- the token parser --------------------------------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(), st.binary().map(lambda raw: raw.decode("latin-1"))))
def test_the_parser_refuses_any_text_or_bytes_with_malformed_token_and_nothing_else(value):
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(value)


@FUZZ
@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=52, max_size=52))
def test_the_parser_refuses_well_shaped_values_that_were_not_signed_here(body):
    # Right prefix, right length, right alphabet: only the signature can tell, and it does.
    with pytest.raises(credentials.MalformedToken, match="signature"):
        credentials.parse(TOKEN_PREFIX + body)


@FUZZ
@given(
    position=st.integers(min_value=len(TOKEN_PREFIX), max_value=55),
    replacement=st.sampled_from(string.ascii_letters + string.digits),
)
def test_changing_any_one_character_of_a_real_token_makes_it_malformed(position, replacement):
    value, _parsed = credentials.generate()
    if value[position] == replacement:
        return
    with pytest.raises(credentials.MalformedToken):
        credentials.parse(value[:position] + replacement + value[position + 1 :])


# --- the Authorization and Rest-Api-Key headers through the middleware -----------------------------------


# What a WSGI server can hand Django: any latin-1 text (HTTP header bytes decoded as latin-1).
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300)


@pytest.mark.django_db
@FUZZ
@given(scheme=st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "Bearer\t", ""]), value=HEADER_TEXT)
def test_any_authorization_header_is_refused_with_401_json_and_nothing_recorded(
    client, issued, scheme, value
):
    before = _snapshot()
    response = client.get("/api/users/me", HTTP_AUTHORIZATION=scheme + value)
    assert_clear_api_error(response, 401)
    assert response["WWW-Authenticate"].startswith('Bearer realm="api"')
    assert _snapshot() == before


@pytest.mark.django_db
@FUZZ
@given(value=HEADER_TEXT)
def test_any_legacy_key_header_that_is_not_a_key_is_refused_with_401_json(client, user, value):
    # Each example starts with no failure counted: a well-shaped guess counts against the client's
    # address, and a few dozen examples would meet the API failure limit (tests/test_throttle.py).
    AttemptCounter.objects.all().delete()
    before = _snapshot()
    response = client.get("/api/users/me", HTTP_REST_API_KEY=value)
    body = assert_clear_api_error(response, 401)
    assert "Bearer" in body["detail"] or "malformed" in body["detail"]
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header, value",
    [
        ("HTTP_AUTHORIZATION", "Bearer " + "A" * 65536),
        ("HTTP_AUTHORIZATION", "Bearer bpt_" + "x" * 65536),
        ("HTTP_AUTHORIZATION", "Bearer " + "ü" * 20000),
        ("HTTP_AUTHORIZATION", "Bearer bpt_" + "é" * 52),
        ("HTTP_AUTHORIZATION", "Bearer bpt_\x00" + "A" * 51),
        ("HTTP_REST_API_KEY", "k" * 65536),
        ("HTTP_REST_API_KEY", "clé-ünïcødé-ключ"),
        ("HTTP_REST_API_KEY", "key\x00with-nul-byte"),
    ],
)
def test_huge_and_non_ascii_credentials_get_a_clear_401_without_a_query(client, header, value):
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **{header: value})
    assert_clear_api_error(response, 401)
    assert len(queries) == 0
    assert len(response.content) < 1000  # the value is not echoed back


@pytest.mark.django_db
def test_a_good_prefix_and_id_with_a_bad_signature_is_refused_before_the_database(client, issued):
    _token, value = issued
    forged = value[:-8] + ("0" * 8 if not value.endswith("0" * 8) else "1" * 8)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/users/me", **bearer(forged))
    body = assert_clear_api_error(response, 401)
    assert "malformed" in body["detail"]
    assert len(queries) == 0
    assert UsageRecord.objects.count() == 0


# --- names: NUL bytes, markup, 10,000 characters ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name, message",
    [
        ("nul\x00byte", "control characters"),
        ("x" * 10_000, "at most 100"),
        ("   ", "Enter a name"),
        ("tab\tand\nnewline", "control characters"),
    ],
)
def test_bad_names_through_the_api_get_400_with_the_field_and_change_nothing(
    client, user, issued, name, message
):
    client.force_login(user)
    before = _snapshot()
    created = client.post("/api/tokens", {"name": name}, content_type="application/json")
    body = assert_clear_api_error(created, 400)
    assert any(message in m for m in body["fields"]["name"])
    renamed = client.patch(f"/api/tokens/{issued[0].pk}", {"name": name}, content_type="application/json")
    assert any(message in m for m in assert_clear_api_error(renamed, 400)["fields"]["name"])
    assert _snapshot() == before


@pytest.mark.django_db
def test_markup_in_a_name_is_stored_as_text_and_always_shown_escaped(client, user):
    client.force_login(user)
    created = client.post("/api/tokens", {"name": MARKUP[:100]}, content_type="application/json")
    assert created.status_code == 201
    assert created["X-Content-Type-Options"] == "nosniff"  # JSON is never sniffed into HTML
    token = Token.objects.get(pk=created.json()["id"])
    assert token.name == MARKUP[:100]
    for path in (
        "/profile/integrations/authorizations/",
        f"/profile/integrations/authorizations/{token.pk}/",
        "/profile/",
    ):
        page = client.get(path)
        assert page.status_code == 200
        html = page.content.decode()
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert" in html, path


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["nul\x00byte", "x" * 10_000])
def test_bad_names_through_the_html_create_form_get_400_and_create_nothing(client, user, name):
    client.force_login(user)
    form = client.get("/profile/integrations/authorizations/new/").context["form"]
    before = _snapshot()
    response = client.post(
        "/profile/integrations/authorizations/new/",
        {
            "name": name,
            "purpose": "",
            "expiry": "30d",
            "nonce": form["nonce"].initial,
        },
    )
    assert response.status_code == 400
    assert b'class="field-error"' in response.content
    assert b"Null characters are not allowed" in response.content or b"at most 100" in response.content
    assert _snapshot() == before


@pytest.mark.django_db
def test_markup_through_the_html_create_form_comes_back_escaped_on_the_reveal(client, user):
    client.force_login(user)
    form = client.get("/profile/integrations/authorizations/new/").context["form"]
    response = client.post(
        "/profile/integrations/authorizations/new/",
        {
            "name": MARKUP[:100],
            "purpose": MARKUP,
            "expiry": "30d",
            "nonce": form["nonce"].initial,
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.django_db
def test_markup_and_nul_in_a_rename_form_are_refused_or_escaped(client, user, issued):
    token, _value = issued
    client.force_login(user)
    refused = client.post(f"/profile/integrations/authorizations/{token.pk}/rename/", {"name": "a\x00b"})
    assert refused.status_code == 400
    assert Token.objects.get(pk=token.pk).name == token.name
    renamed = client.post(
        f"/profile/integrations/authorizations/{token.pk}/rename/", {"name": MARKUP[:100]}, follow=True
    )
    assert renamed.status_code == 200
    assert "<script>alert" not in renamed.content.decode()


# --- wrong content types and broken JSON ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, content_type, status, detail",
    [
        ("name=x", "application/x-www-form-urlencoded", 415, "application/json"),
        ('{"name": "x"}', "text/plain", 415, "application/json"),
        ("<token><name>x</name></token>", "application/xml", 415, "application/json"),
        ('{"name": "x"', "application/json", 400, "not valid JSON"),
        (b'{"name": "\xff\xfe"}', "application/json", 400, "not valid JSON"),
        ('["name", "x"]', "application/json", 400, "JSON object"),
        ('"just a string"', "application/json", 400, "JSON object"),
        ('{"name": 42}', "application/json", 400, "invalid fields"),
        ('{"name": "x", "is_staff": true}', "application/json", 400, "invalid fields"),
        ('{"name": "x", "expires_at": "tomorrow"}', "application/json", 400, "invalid fields"),
        ('{"name": "' + "x" * 20_000 + '"}', "application/json", 413, "too large"),
    ],
)
def test_wrong_content_types_and_broken_json_get_a_clear_4xx_and_change_nothing(
    client, user, issued, body, content_type, status, detail
):
    client.force_login(user)
    before = _snapshot()
    for method, path in (("post", "/api/tokens"), ("patch", f"/api/tokens/{issued[0].pk}")):
        response = getattr(client, method)(path, body, content_type=content_type)
        assert detail in assert_clear_api_error(response, status)["detail"], method
    assert _snapshot() == before


@pytest.mark.django_db
def test_json_nested_thousands_of_levels_deep_gets_a_400_and_changes_nothing(client, user, issued):
    client.force_login(user)
    before = _snapshot()
    body = "[" * 3000 + "]" * 3000  # 6 KB, under the size limit, deeper than the parser's stack
    for nested in (body, '{"name": ' + body + "}"):
        for method, path in (("post", "/api/tokens"), ("patch", f"/api/tokens/{issued[0].pk}")):
            response = getattr(client, method)(path, nested, content_type="application/json")
            assert "nests too deeply" in assert_clear_api_error(response, 400)["detail"], method
    assert _snapshot() == before


# --- numbers in the address: Unicode digits, huge values ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("param", ["page", "page_size"])
@pytest.mark.parametrize("raw", ["²", "١", "½", "9" * 5000, "-1", "1e3"])
def test_page_numbers_that_are_not_plain_ascii_digits_get_a_400_naming_the_parameter(
    client, issued, param, raw
):
    _token, value = issued
    for path in ("/api/tokens", f"/api/tokens/{issued[0].pk}/usage"):
        response = client.get(path, {param: raw}, **bearer(value))
        body = assert_clear_api_error(response, 400)
        assert param in body["fields"], path


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["²", "9" * 40])
def test_a_unicode_or_huge_request_cursor_on_the_token_page_is_ignored(client, user, issued, raw):
    client.force_login(user)
    response = client.get(f"/profile/integrations/authorizations/{issued[0].pk}/", {"before": raw})
    assert response.status_code == 200


# --- invisible and unstorable characters in names and purposes ---------------------------------------------

INVISIBLE = [
    ("del\x7fchar", "U+007F"),
    ("csi\x9b31m", "U+009B"),
    ("evil\u202egnp.exe", "U+202E"),
    ("zero\u200bwidth", "U+200B"),
    ("line\u2028separator", "U+2028"),
    ("para\u2029separator", "U+2029"),
    ("lone\ud800surrogate", "U+D800"),
    ("private\ue000use", "U+E000"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("name, code", INVISIBLE)
def test_control_invisible_and_surrogate_characters_in_a_name_get_400_naming_them(
    client, user, issued, name, code
):
    client.force_login(user)
    before = _snapshot()
    created = client.post("/api/tokens", {"name": name}, content_type="application/json")
    assert code in " ".join(assert_clear_api_error(created, 400)["fields"]["name"])
    renamed = client.patch(f"/api/tokens/{issued[0].pk}", {"name": name}, content_type="application/json")
    assert code in " ".join(assert_clear_api_error(renamed, 400)["fields"]["name"])
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("purpose, code", [*INVISIBLE, ("nul\x00byte", "U+0000")])
def test_control_invisible_and_surrogate_characters_in_a_purpose_get_400_naming_them(
    client, user, purpose, code
):
    client.force_login(user)
    before = _snapshot()
    created = client.post("/api/tokens", {"name": "ok", "purpose": purpose}, content_type="application/json")
    assert code in " ".join(assert_clear_api_error(created, 400)["fields"]["purpose"])
    assert _snapshot() == before


@pytest.mark.django_db
def test_a_purpose_of_several_lines_and_a_name_with_emoji_are_still_accepted(client, user):
    client.force_login(user)
    body = {"name": "nas01 backup 💾 – café", "purpose": "line one\r\n\tline two"}
    response = client.post("/api/tokens", body, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["purpose"] == "line one\r\n\tline two"


@pytest.mark.django_db
@pytest.mark.parametrize("name, code", [(n, c) for n, c in INVISIBLE if c != "U+D800"])
def test_invisible_characters_in_a_name_through_the_html_form_get_a_field_error(client, user, name, code):
    client.force_login(user)
    form = client.get("/profile/integrations/authorizations/new/").context["form"]
    before = _snapshot()
    response = client.post(
        "/profile/integrations/authorizations/new/",
        {
            "name": name,
            "purpose": "",
            "expiry": "30d",
            "nonce": form["nonce"].initial,
        },
    )
    assert response.status_code == 400
    assert code in " ".join(response.context["form"].errors["name"])
    assert _snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "expires_at", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]
)
def test_an_expiry_at_the_ends_of_the_calendar_gets_a_400(client, user, expires_at):
    client.force_login(user)
    before = _snapshot()
    body = {"name": "far", "expires_at": expires_at}
    response = client.post("/api/tokens", body, content_type="application/json")
    assert "expires_at" in assert_clear_api_error(response, 400)["fields"]
    assert _snapshot() == before


@pytest.mark.django_db
def test_a_custom_expiry_in_the_year_9999_through_the_html_form_gets_a_field_error(client, user):
    client.force_login(user)
    form = client.get("/profile/integrations/authorizations/new/").context["form"]
    before = _snapshot()
    response = client.post(
        "/profile/integrations/authorizations/new/",
        {
            "name": "far",
            "purpose": "",
            "expiry": "custom",
            "custom_expiry": "9999-12-31T23:59",
            "nonce": form["nonce"].initial,
        },
    )
    assert response.status_code == 400
    assert "longest lifetime" in " ".join(response.context["form"].errors["custom_expiry"])
    assert _snapshot() == before


# --- NUL and other unstorable characters in the request path ----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path, stored",
    [
        ("/api/tokens%00", "/api/tokens\\x00"),
        ("/api/users/me%00/x", "/api/users/me\\x00/x"),
        ("/api/%5Cx00", "/api/\\\\x00"),  # a real backslash cannot pose as an escaped NUL
    ],
)
def test_every_use_is_recorded_whatever_the_path_holds(client, issued, user, path, stored):
    token, value = issued
    response = client.get(path, **bearer(value), HTTP_USER_AGENT="agent\x00zero")
    assert response.status_code == 404  # no such route; not 503, not 500
    token.revoke(actor=user)
    refused = client.get(path, **bearer(value))
    assert refused.status_code == 401
    records = list(UsageRecord.objects.filter(token=token).order_by("at", "pk"))
    assert [(r.path, r.accepted) for r in records] == [(stored, True), (stored, False)]
    assert records[0].user_agent == "agent\\x00zero"


# --- CSRF --------------------------------------------------------------------------------------------------


@pytest.fixture
def csrf_client(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_form_posts_without_a_csrf_token_are_refused_with_403_and_change_nothing(csrf_client, user, issued):
    token, _value = issued
    nonce = csrf_client.get("/profile/integrations/authorizations/new/").context["form"]["nonce"].initial
    before = _snapshot()
    posts = [
        ("/profile/integrations/authorizations/new/", {"name": "csrf", "expiry": "30d", "nonce": nonce}),
        (f"/profile/integrations/authorizations/{token.pk}/rename/", {"name": "renamed by a forged form"}),
        (f"/profile/integrations/authorizations/{token.pk}/revoke/", {}),
        ("/accounts/logout/", {}),
    ]
    for path, data in posts:
        response = csrf_client.post(path, data)
        assert response.status_code == 403, path
        assert b"CSRF" in response.content, path
    assert _snapshot() == before


@pytest.mark.django_db
def test_api_writes_with_a_session_but_no_csrf_token_are_refused_as_json(csrf_client, issued):
    token, _value = issued
    before = _snapshot()
    create = csrf_client.post("/api/tokens", {"name": "csrf"}, content_type="application/json")
    assert_clear_api_error(create, 403)
    assert create.json()["error"] == "csrf_failed" and "CSRF" in create.json()["detail"]
    revoke = csrf_client.delete(f"/api/tokens/{token.pk}")
    assert_clear_api_error(revoke, 403)
    rename = csrf_client.patch(f"/api/tokens/{token.pk}", {"name": "x"}, content_type="application/json")
    assert_clear_api_error(rename, 403)
    assert _snapshot() == before
    # Reading needs no CSRF token, and a bearer token needs none at all.
    assert csrf_client.get("/api/tokens").status_code == 200


# --- other users' ids --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_another_users_token_id_answers_exactly_like_an_unknown_id(client, user, other_user, issue):
    theirs, _value = issue(other_user, name="theirs")
    unknown = theirs.pk + 1000
    client.force_login(user)
    before = _snapshot()
    requests = [
        ("get", "/api/tokens/{}", None),
        ("get", "/api/tokens/{}/usage", None),
        ("patch", "/api/tokens/{}", json.dumps({"name": "mine now"})),
        ("delete", "/api/tokens/{}", None),
        ("get", "/profile/integrations/authorizations/{}/", None),
        ("get", "/profile/integrations/authorizations/{}/revoke/", None),
        ("post", "/profile/integrations/authorizations/{}/revoke/", {}),
        ("post", "/profile/integrations/authorizations/{}/rename/", {"name": "mine now"}),
    ]
    for method, template, data in requests:
        answers = []
        for pk in (theirs.pk, unknown):
            kwargs = {"content_type": "application/json"} if isinstance(data, str) else {}
            call = getattr(client, method)
            with CaptureQueriesContext(connection) as queries:
                url = template.format(pk)
                response = call(url, data, **kwargs) if data is not None else call(url)
            answers.append((response.status_code, response.content, len(queries)))
        # Same status, same body, same work (the same number of queries): nothing tells the two apart.
        assert answers[0] == answers[1], template
        assert answers[0][0] == 404, template
    assert _snapshot() == before
    assert Token.objects.get(pk=theirs.pk).status == "active"


@pytest.mark.django_db
def test_a_bearer_token_cannot_reach_another_users_token_either(client, issued, other_user, issue):
    theirs, _value = issue(other_user, name="theirs")
    _mine, value = issued
    response = client.delete(f"/api/tokens/{theirs.pk}", **bearer(value))
    assert_clear_api_error(response, 404)
    assert Token.objects.get(pk=theirs.pk).revoked_at is None


# --- the sign-in form ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sign_in_form_reflects_no_markup(fresh_throttle, client):
    response = sign_in(client, MARKUP, "x")
    assert response.status_code == 200
    assert "<script>alert" not in response.content.decode()


# --- terminal control sequences from clients -------------------------------------------------------------

# A hyperlink escape, a colour, BEL, the C1 CSI "clear screen", a forged line, DEL.
HOSTILE_AGENT = "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x1b[31mred \x9b2J\nforged line\x7f"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x7f")


def _assert_no_raw_control(text, where):
    assert not any(c in text for c in RAW_CONTROLS), f"raw control character in {where}: {text!r}"


@pytest.mark.django_db
def test_control_characters_a_client_sends_are_stored_escaped_and_reach_no_operator_raw(
    client, issued, staff_user, settings, capsys
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    token, value = issued
    client.get(
        "/api/users/me%1b%5B2J", **bearer(value), HTTP_USER_AGENT=HOSTILE_AGENT, REMOTE_ADDR="192.0.2.7"
    )
    unknown, _parsed = credentials.generate()
    client.get("/api/users/me", **bearer(unknown), HTTP_USER_AGENT=HOSTILE_AGENT, REMOTE_ADDR="192.0.2.8")

    record = UsageRecord.objects.get(token=token)
    assert record.path == "/api/users/me\\x1b[2J"
    assert record.user_agent.startswith("\\x1b]8;;https://evil.example\\x07click")
    assert "\\x9b2J\\x0aforged line\\x7f" in record.user_agent
    assert RefusedClient.objects.get().last_user_agent == record.user_agent

    # send_alerts with the console backend prints the new-address mail on the operator's terminal.
    capsys.readouterr()
    call_command("send_alerts")
    printed = capsys.readouterr().out
    assert "\\x1b]8;;https://evil.example" in printed
    _assert_no_raw_control(printed, "send_alerts' output")
    exported = capsys.readouterr()
    call_command("export_events")
    exported = capsys.readouterr().out
    assert "evil.example" in exported
    _assert_no_raw_control(exported, "export_events")

    owner = signed_in_client(token.user)
    page = owner.get(f"/profile/integrations/authorizations/{token.pk}/").content.decode()
    _assert_no_raw_control(page, "the token page")
    staff = signed_in_client(staff_user)
    for url in (
        "/admin/tokens/usagerecord/",
        f"/admin/tokens/usagerecord/{record.pk}/change/",
        "/admin/tokens/refusedclient/",
        "/admin/tokens/tokenevent/",
    ):
        response = staff.get(url)
        assert response.status_code == 200, url
        _assert_no_raw_control(response.content.decode(), url)

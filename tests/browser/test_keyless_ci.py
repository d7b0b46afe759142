"""Keyless CI in a browser without JavaScript: a policy made on the page, a job's exchange, its undoing."""

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from tests.oidc_issuer import LocalIssuer
from tokens import exchange
from tokens.models import Token

AUDIENCE = "https://ci.example"


@pytest.fixture
def issuer(settings):
    exchange.forget_issuers()
    issuer = LocalIssuer()
    settings.OIDC_FEDERATION_ISSUERS = [issuer.url]
    yield issuer
    issuer.close()
    exchange.forget_issuers()


def _post(live_server, path, form, headers=None):
    request = urllib.request.Request(
        live_server.url + path,
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _exchange(live_server, subject):
    return _post(
        live_server,
        "/api/token-exchange",
        {
            "grant_type": exchange.GRANT_TYPE,
            "subject_token": subject,
            "subject_token_type": exchange.JWT_TOKEN_TYPE,
        },
    )


@pytest.mark.no_javascript
def test_a_person_trusts_a_repository_its_job_gets_a_token_and_deleting_the_policy_revokes_it(
    sign_in, user, page, live_server, issuer
):
    sign_in(user)
    page.get_by_role("link", name="Keyless CI").click()
    page.get_by_role("link", name="New trust policy").click()
    page.get_by_label("Name").fill("deploy")
    page.get_by_label("Audience").fill(AUDIENCE)
    page.get_by_label("Conditions").fill("repository = octo-org/octo-repo\nref = refs/heads/main")
    page.get_by_label("Token lifetime (minutes)").fill("10")
    page.get_by_role("button", name="Create trust policy").click()
    page.get_by_text("Created the trust policy “deploy”.").wait_for()

    status, body = _exchange(live_server, issuer.github_token(audience=AUDIENCE))
    assert status == 200 and 590 <= body["expires_in"] <= 600
    refused, answer = _exchange(live_server, issuer.github_token(audience=AUDIENCE, ref="refs/heads/dev"))
    assert refused == 400 and answer["error"] == "invalid_grant"

    page.reload()
    page.get_by_role("link", name="deploy · run 7283946401").first.wait_for()
    page.get_by_text("no policy's conditions hold").first.wait_for()

    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete trust policy").click()
    page.get_by_text("revoked 1 live token(s)").wait_for()
    assert Token.objects.get().revoked_at is not None

"""Benchmark keyless CI: a token exchange with the issuer's keys cached, against a token creation by the API.

Run by ``bash bench/run`` (``make bench``) after bench.bench, on the same database:

    bench/.venv/bin/python -m bench.exchange --database sqlite

In-process (Django's test client, the whole middleware stack, the real database), in rounds that
alternate the two paths so that noise from the shared machine falls on both:

* ``POST /api/token-exchange`` with a GitHub-shaped job token from a local issuer (tests/oidc_issuer.py)
  whose keys this process fetched once before the rounds: signature check, replay record, policy match
  and minting;
* ``POST /api/tokens`` with a signed-in session: the creation it is compared with.

Target: an exchange costs at most twice a creation. Then an issuer that accepts connections and never
answers is asked for keys: the request must be answered within OIDC_FEDERATION_TIMEOUT (plus a margin
for the answer itself), whatever the issuer does.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

from tests.oidc_issuer import LocalIssuer, SilentServer  # noqa: E402
from tokens import exchange  # noqa: E402
from tokens.models import AttemptCounter, Token, TrustPolicy  # noqa: E402

AUDIENCE = "https://bench.example"
FORM = "application/x-www-form-urlencoded"
TIMEOUT = 1.0
# Time to answer once the deadline has passed: the 503 itself, and waking up on a loaded machine.
MARGIN = 0.5


def _exchange_form(subject):
    return urlencode(
        {
            "grant_type": exchange.GRANT_TYPE,
            "subject_token": subject,
            "subject_token_type": exchange.JWT_TOKEN_TYPE,
        }
    )


def _timed(calls):
    """Run each call; return the median µs."""
    micros = []
    for call in calls:
        started = time.perf_counter()
        status = call()
        micros.append((time.perf_counter() - started) * 1e6)
        assert status in (200, 201), status
    return statistics.median(micros)


def compare(*, rounds, per_round):
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench-ci", email="bench-ci@example.com")
    issuer = LocalIssuer()
    settings.OIDC_FEDERATION_ISSUERS = [issuer.url]
    settings.OIDC_FEDERATION_TIMEOUT = TIMEOUT
    policy = TrustPolicy.objects.create_policy(
        owner=user,
        actor=user,
        name="bench",
        issuer=issuer.url,
        audience=AUDIENCE,
        conditions={"repository": "octo-org/octo-repo"},
        max_live_tokens=100,
    )
    client = Client(HTTP_HOST="127.0.0.1")
    session = Client(HTTP_HOST="127.0.0.1")
    session.force_login(user)
    # The keys are fetched once here: the rounds measure exchanges with the keys cached.
    first = client.post("/api/token-exchange", _exchange_form(issuer.github_token(audience=AUDIENCE)), FORM)
    assert first.status_code == 200, first.content
    exchanges, creations = [], []
    try:
        for number in range(rounds):
            # One job per run, as usual: each minted token has its own name at the first try.
            subjects = [
                issuer.github_token(audience=AUDIENCE, run_id=f"{number}{n:04}") for n in range(per_round)
            ]
            exchanges.append(
                _timed(
                    (lambda s=s: client.post("/api/token-exchange", _exchange_form(s), FORM).status_code)
                    for s in subjects
                )
            )
            creations.append(
                _timed(
                    (
                        lambda name=f"bench {number}-{n}": (
                            session.post(
                                "/api/tokens",
                                json.dumps({"name": name}),
                                content_type="application/json",
                            ).status_code
                        )
                    )
                    for n in range(per_round)
                )
            )
            # Room for the next round under the policy's and the owner's caps.
            Token.objects.filter(user=user).update(revoked_at=timezone.now())
    finally:
        issuer.close()
    ratio = statistics.median(e / c for e, c in zip(exchanges, creations, strict=True))
    assert issuer.requests.count("/.well-known/jwks") == 1, issuer.requests
    return policy, statistics.median(exchanges), statistics.median(creations), ratio


def down_issuer(policy):
    """Return the seconds one exchange took against an issuer that never answers."""
    silent = SilentServer()
    try:
        settings.OIDC_FEDERATION_ISSUERS = [silent.url]
        TrustPolicy.objects.filter(pk=policy.pk).update(issuer=silent.url)
        exchange.forget_issuers()
        AttemptCounter.objects.all().delete()
        signer = LocalIssuer()
        try:
            subject = signer.github_token(audience=AUDIENCE, iss=silent.url)
        finally:
            signer.close()
        client = Client(HTTP_HOST="127.0.0.1")
        started = time.perf_counter()
        response = client.post("/api/token-exchange", _exchange_form(subject), FORM)
        took = time.perf_counter() - started
        assert response.status_code == 503, response.status_code
        return took
    finally:
        silent.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="label for the table (sqlite, postgresql)")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    policy, exchange_us, create_us, ratio = compare(rounds=args.rounds, per_round=args.per_round)
    took = down_issuer(policy)
    lines = [
        f"### keyless CI, {args.database}",
        "",
        f"In-process (Django test client, full middleware), {args.rounds} rounds × {args.per_round} "
        "requests per path, median µs of each round, then the median of the rounds; the ratio is the "
        "median of per-round ratios.",
        "",
        "| path | µs |",
        "| --- | ---: |",
        f"| POST /api/token-exchange, keys cached (GitHub-shaped job token) | {exchange_us:,.0f} |",
        f"| POST /api/tokens with a session | {create_us:,.0f} |",
        "",
        "| target | measured | met |",
        "| --- | ---: | --- |",
        f"| exchange ≤ 2× creation | {ratio:.2f}× | {'yes' if ratio <= 2 else 'no'} |",
        f"| an issuer that never answers holds the request ≤ {TIMEOUT:.1f} s (+{MARGIN} s to answer) "
        f"| {took:.2f} s | {'yes' if took <= TIMEOUT + MARGIN else 'no'} |",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if took > TIMEOUT + MARGIN:
        sys.exit(1)


if __name__ == "__main__":
    main()

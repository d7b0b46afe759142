"""Keyless CI: check a CI job's OpenID Connect token and trade it for a short-lived portal token (RFC 8693).

``exchange()`` is the whole flow behind ``POST /api/token-exchange``:

1. The job's token (a JWT) names its issuer; only issuers in ``OIDC_FEDERATION_ISSUERS`` are looked at,
   and only the algorithms RS256 and ES256 (never ``none``, never HMAC, whose "secret" would be the
   issuer's public key).
2. The issuer's keys come from its discovery document's ``jwks_uri`` (HTTPS only), fetched with
   PyJWT's ``PyJWKClient`` and kept in this process. A key id not among them refetches the keys, at
   most once a minute per issuer, so random key ids cannot make us hammer an issuer. Every fetch runs
   under one deadline (``OIDC_FEDERATION_TIMEOUT``): an issuer that is down or slow holds a worker
   that long at most.
3. The signature, ``iss``, ``aud`` (one of the issuer's policies' audiences), ``exp``, ``nbf`` and
   ``iat`` are checked with a minute's leeway at most; ``jti`` must be new (UsedJobToken).
4. The first policy (oldest first) of that issuer whose audience and conditions hold mints an ordinary
   token of its owner (``TrustPolicy.mint``, which goes through ``Token.objects.issue``).

Every outcome is written down (``TokenExchange``, and an Activity Stream event for the owner it
concerns) with the reason; the caller only learns "invalid_grant", never which check failed.
"""

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from urllib.parse import urlsplit

import jwt
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .issuers import url_problem
from .models import TokenEvent, TokenExchange, TrustPolicy, UsedJobToken

log = logging.getLogger(__name__)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
SUBJECT_TOKEN_TYPES = frozenset({JWT_TOKEN_TYPE, ID_TOKEN_TYPE})
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

ALGORITHMS = ("RS256", "ES256")
LEEWAY = 60  # seconds, for exp, nbf and iat: CI runners' clocks drift a little, never a lot
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
MAX_SUBJECT_LIFETIME = 7 * 24 * 3600  # seconds from iat to exp
KEY_REFRESH_INTERVAL = 60  # seconds between two fetches for an unknown key id, per issuer
KEYS_LIFESPAN = 300  # seconds a fetched key set is used before it is fetched again
DISCOVERY_LIFESPAN = 3600
MAX_SUBJECT_TOKEN_BYTES = 16 * 1024
# Fetches run on these threads so that the request waits for the deadline, never longer: a socket
# timeout bounds each read, not a server that trickles a byte a second.
FETCH_THREADS = 4


class Refused(Exception):
    """The job's token is refused; *reason* is for the owner and administrators, never for the caller."""

    def __init__(self, reason, *, claims=None, policy=None, error="invalid_grant"):
        super().__init__(reason)
        self.reason = reason
        self.claims = claims
        self.policy = policy
        self.error = error


class IssuerUnavailable(Exception):
    """The issuer's discovery document or keys could not be fetched in time."""


@dataclass(frozen=True)
class Job:
    """What a verified job token says about the job, for names, purposes, events and records."""

    issuer: str
    subject: str
    repository: str
    job: str
    url: str

    @classmethod
    def from_claims(cls, claims):
        issuer = claims.get("iss", "")
        repository = str(claims.get("repository") or claims.get("project_path") or "")
        if claims.get("run_id"):
            # GitHub Actions; a re-run keeps the run id and counts attempts.
            job = f"run {claims['run_id']}"
            if str(claims.get("run_attempt", "1")) != "1":
                job += f" attempt {claims['run_attempt']}"
            server = "https://github.com" if "githubusercontent.com" in issuer else _origin(issuer)
            url = f"{server}/{repository}/actions/runs/{claims['run_id']}" if repository else ""
        elif claims.get("job_id"):
            # GitLab CI: the issuer is the GitLab instance itself.
            job = f"job {claims['job_id']}"
            url = f"{issuer.rstrip('/')}/{repository}/-/jobs/{claims['job_id']}" if repository else ""
        else:
            job = f"jti {claims.get('jti', '?')}"
            url = ""
        return cls(
            issuer=issuer,
            subject=str(claims.get("sub", "")),
            repository=repository,
            job=job,
            url=url,
        )

    def describe(self):
        parts = [self.issuer, f"sub {self.subject}"]
        if self.repository:
            parts.append(self.repository)
        parts.append(self.job)
        return ", ".join(parts)


def _origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- the issuers' keys ------------------------------------------------------------------------------------

_fetchers = ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="oidc-fetch")


def _within(deadline, work):
    """Run *work* on a fetch thread; return its result, or raise IssuerUnavailable at *deadline*."""
    remaining = deadline - monotonic()
    if remaining <= 0:
        raise IssuerUnavailable("deadline passed")
    future = _fetchers.submit(work)
    try:
        return future.result(timeout=remaining)
    except FutureTimeout:
        raise IssuerUnavailable("timed out") from None
    except (jwt.PyJWTError, OSError, ValueError) as error:
        raise IssuerUnavailable(type(error).__name__) from None


def _discover(issuer, timeout):
    """Fetch *issuer*'s discovery document and return its ``jwks_uri`` (checked, HTTPS only)."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    # PyJWKClient fetches a JSON document without following redirects, within a timeout: the same
    # client reads the discovery document as the keys.
    document = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout).fetch_data()
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise ValueError("discovery document of another issuer")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or url_problem(jwks_uri):
        raise ValueError("jwks_uri missing or not https")
    return jwks_uri


class IssuerKeys:
    """One issuer's signing keys in this process: discovered once, kept a while, refreshed sparingly.

    PyJWKClient fetches and parses the key set (no redirects, within the timeout); the keeping and the
    refresh limit are ours, so a cached lookup never leaves the request's thread.
    """

    def __init__(self, issuer):
        self.issuer = issuer
        self.client = None
        self.discovered_at = None
        self.keys = None
        self.fetched_at = None  # the last fetch, which starts the refresh interval too
        self.lock = threading.Lock()

    def _fetch(self, deadline):
        client = self.client
        self.keys = _within(deadline, lambda: client.get_jwk_set(refresh=True))
        self.fetched_at = monotonic()

    def signing_key(self, kid, *, deadline):
        """Return the issuer's PyJWK with key id *kid*, or None; raise IssuerUnavailable."""
        timeout = settings.OIDC_FEDERATION_TIMEOUT
        with self.lock:
            if self.client is None or monotonic() - self.discovered_at > DISCOVERY_LIFESPAN:
                jwks_uri = _within(deadline, lambda: _discover(self.issuer, timeout))
                self.client = jwt.PyJWKClient(jwks_uri, cache_jwk_set=False, timeout=timeout)
                self.discovered_at = monotonic()
                self.keys = None
            if self.keys is None or monotonic() - self.fetched_at > KEYS_LIFESPAN:
                self._fetch(deadline)
            key = _find(self.keys, kid)
            # A key id not among them: the issuer may have rotated. Asked again at most once a minute.
            if key is None and monotonic() - self.fetched_at >= KEY_REFRESH_INTERVAL:
                self._fetch(deadline)
                key = _find(self.keys, kid)
            return key


def _find(key_set, kid):
    for key in key_set.keys:
        if key.key_id == kid and key.public_key_use in ("sig", None):
            return key
    return None


_issuers = {}
_issuers_lock = threading.Lock()


def issuer_keys(issuer):
    """Return this process's IssuerKeys for *issuer* (made on first use)."""
    with _issuers_lock:
        if issuer not in _issuers:
            _issuers[issuer] = IssuerKeys(issuer)
        return _issuers[issuer]


def forget_issuers():
    """Drop every cached issuer key set (the tests' issuers come and go)."""
    with _issuers_lock:
        _issuers.clear()


# --- the job's token --------------------------------------------------------------------------------------


def verify(subject_token, *, audiences_of, deadline):
    """Return the verified claims of *subject_token*, or raise Refused or IssuerUnavailable.

    *audiences_of(issuer)* returns the audiences the issuer's policies accept; the issuer's keys are
    waited for until *deadline* (``time.monotonic()``) at most.
    """
    try:
        header = jwt.get_unverified_header(subject_token)
        unverified = jwt.decode(subject_token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Refused("not a JWT") from None
    if header.get("alg") not in ALGORITHMS:
        raise Refused(f"algorithm {str(header.get('alg'))[:20]!r} not accepted")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in settings.OIDC_FEDERATION_ISSUERS:
        raise Refused(f"issuer {str(issuer)[:100]!r} not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Refused("no key id")
    key = issuer_keys(issuer).signing_key(kid, deadline=deadline)
    if key is None:
        raise Refused(f"unknown key id {kid[:40]!r}")
    if key.algorithm_name != header["alg"]:
        # An RSA key offered for ES256 or the reverse: refused before PyJWT sees the pair.
        raise Refused(f"key {kid[:40]!r} is not a {header['alg']} key")
    audiences = audiences_of(issuer)
    if not audiences:
        raise Refused("no trust policy for this issuer")
    try:
        claims = jwt.decode(
            subject_token,
            key.key,
            algorithms=[header["alg"]],
            audience=audiences,
            issuer=issuer,
            leeway=LEEWAY,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError:
        raise Refused("expired") from None
    except jwt.ImmatureSignatureError:
        raise Refused("not yet valid (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise Refused("audience not accepted by any policy") from None
    except jwt.MissingRequiredClaimError as error:
        raise Refused(f"claim {error.claim} missing") from None
    except jwt.InvalidSignatureError:
        raise Refused("bad signature") from None
    except jwt.PyJWTError as error:
        raise Refused(f"invalid: {type(error).__name__}") from None
    # CI job tokens live minutes to hours; one that claims to live for weeks would also have to be
    # remembered (its jti) for weeks.
    if claims["exp"] - claims["iat"] > MAX_SUBJECT_LIFETIME:
        raise Refused("lives longer than a week")
    return claims


def _expiry(claims):
    return datetime.fromtimestamp(int(claims["exp"]) + LEEWAY, tz=UTC)


def exchange(subject_token, *, ip=None, now=None, started=None):
    """Trade a CI job's token for a portal token; return ``(token, plaintext)``.

    Raise Refused (recorded, with its reason) or IssuerUnavailable (not recorded: nothing was decided).
    The issuer is waited for until OIDC_FEDERATION_TIMEOUT after *started* (``time.monotonic()``, by
    default now): the view passes when the request began, so that is what the timeout bounds.
    """
    now = now or timezone.now()
    deadline = (started or monotonic()) + settings.OIDC_FEDERATION_TIMEOUT
    policies = []

    def audiences_of(issuer):
        # One read for both the audiences and the matching: the issuer's policies, oldest first.
        policies.extend(TrustPolicy.objects.filter(issuer=issuer).select_related("user").order_by("pk"))
        return sorted({policy.audience for policy in policies})

    try:
        claims = verify(subject_token, audiences_of=audiences_of, deadline=deadline)
        job = Job.from_claims(claims)
        if not isinstance(claims["jti"], str) or not claims["jti"]:
            raise Refused("jti is not a string", claims=claims)
        with transaction.atomic():
            if not UsedJobToken.objects.claim(
                issuer=job.issuer, jti=claims["jti"][:255], expires_at=_expiry(claims), now=now
            ):
                raise Refused("jti already used", claims=claims, policy=_pinned(policies, claims))
            policy = next((p for p in policies if p.accepts(claims)), None)
            if policy is None:
                raise Refused("no policy's conditions hold", claims=claims, policy=_pinned(policies, claims))
            if not policy.user.is_active:
                raise Refused("the policy's owner is deactivated", claims=claims, policy=policy)
            try:
                token, plaintext = policy.mint(job=job.job, purpose=job.url or job.describe(), ip=ip, now=now)
            except ValidationError as error:
                reason = f"not minted: {' '.join(error.messages)}"
                raise Refused(reason, claims=claims, policy=policy) from None
            TokenExchange.objects.create(
                at=now,
                ip=ip,
                accepted=True,
                issuer=job.issuer,
                subject=job.subject[:255],
                repository=job.repository[:255],
                job=job.job[:255],
                job_url=job.url[:500],
                policy=policy,
                policy_name=policy.name,
                user_id=policy.user_id,
                token=token,
            )
            policy.record(TokenEvent.Kind.EXCHANGED, token=token, ip=ip, at=now, detail=job.describe())
    except Refused as refusal:
        _record_refusal(refusal, ip=ip, now=now)
        raise
    return token, plaintext


def _pinned(policies, claims):
    """Return the first policy whose repository or project the job ran for: its owner sees the refusal."""
    return next((p for p in policies if p.pins(claims)), None)


def _record_refusal(refusal, *, ip, now):
    job = Job.from_claims(refusal.claims) if refusal.claims else None
    policy = refusal.policy
    TokenExchange.objects.create(
        at=now,
        ip=ip,
        accepted=False,
        reason=refusal.reason[:255],
        issuer=job.issuer[:255] if job else "",
        subject=job.subject[:255] if job else "",
        repository=job.repository[:255] if job else "",
        job=job.job[:255] if job else "",
        job_url=job.url[:500] if job else "",
        policy=policy,
        policy_name=policy.name if policy else "",
        user_id=policy.user_id if policy else None,
    )
    if policy is not None:
        policy.record(
            TokenEvent.Kind.EXCHANGE_REFUSED, ip=ip, at=now, detail=f"{refusal.reason}: {job.describe()}"
        )
    log.info("token exchange refused: %s", refusal.reason)

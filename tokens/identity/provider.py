"""The organisation's OpenID Connect provider as this process knows it: its discovery document and keys.

Both are fetched on first use and kept in the process for a while, so the portal starts (and serves
everything but provider sign-in) while the provider is down, and a sign-in costs no extra round trip.
The discovery document must name exactly the configured issuer (OpenID Connect Discovery 1.0, 4.3):
a document served for another issuer is refused, as are endpoints over plain HTTP to other machines.
A key id the cached key set does not hold makes one refetch (the provider rotated its keys), at most
once a minute, so a forged token with made-up key ids cannot make the portal hammer the provider.
"""

import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
import requests
from django.conf import settings

# Seconds to wait for the provider; a person is waiting behind each call.
TIMEOUT = 10
METADATA_LIFETIME = 3600
KEYS_LIFETIME = 3600
KEYS_REFETCH_PAUSE = 60
# Only asymmetric signatures: the client secret must never be what an ID token is checked against.
ALLOWED_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class ProviderUnavailable(Exception):
    """The provider could not be reached, or answered with something that cannot be used."""


def enabled():
    """Return True when organisation sign-in is configured."""
    return bool(settings.OIDC_ISSUER)


def origin(url):
    """Return the scheme://host[:port] of *url*."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _acceptable_url(url):
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.netloc:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


def _get_json(url):
    try:
        response = requests.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as error:
        raise ProviderUnavailable(f"{url}: {error.__class__.__name__}") from error


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    end_session_endpoint: str | None
    # RFC 8414: client_secret_basic is the default when the provider lists nothing.
    token_auth_basic: bool


_lock = threading.Lock()
_cache = {}


def metadata():
    """Return the provider's discovery document (cached), or raise ProviderUnavailable."""
    issuer = settings.OIDC_ISSUER
    now = time.monotonic()
    cached = _cache.get(("metadata", issuer))
    if cached and cached[0] > now:
        return cached[1]
    document = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise ProviderUnavailable("the discovery document names another issuer")
    urls = {}
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not _acceptable_url(document.get(name)):
            raise ProviderUnavailable(f"the discovery document has no usable {name}")
        urls[name] = document[name]
    for name in ("userinfo_endpoint", "end_session_endpoint"):
        urls[name] = document.get(name) if _acceptable_url(document.get(name)) else None
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    found = Metadata(issuer=issuer, token_auth_basic="client_secret_basic" in methods, **urls)
    with _lock:
        _cache[("metadata", issuer)] = (now + METADATA_LIFETIME, found)
    return found


def signing_key(token):
    """Return the provider's key for the ID token *token* and its algorithm, or raise jwt.InvalidTokenError.

    Raise ProviderUnavailable when the key set cannot be fetched.
    """
    header = jwt.get_unverified_header(token)
    algorithm = header.get("alg")
    if algorithm not in ALLOWED_ALGORITHMS:
        raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
    key_id = header.get("kid")
    keys = _key_set(refresh=False)
    key = _pick(keys, key_id, algorithm)
    if key is None and _may_refetch():
        key = _pick(_key_set(refresh=True), key_id, algorithm)
    if key is None:
        raise jwt.InvalidKeyError("no published key matches the token's key id")
    return key, algorithm


def _pick(keys, key_id, algorithm):
    candidates = [
        key for key in keys if key.get("use", "sig") == "sig" and key.get("alg", algorithm) == algorithm
    ]
    if key_id is not None:
        candidates = [key for key in candidates if key.get("kid") == key_id]
    elif len(candidates) != 1:
        return None  # without a key id only an unambiguous key set will do
    for candidate in candidates:
        try:
            return jwt.PyJWK(candidate, algorithm=algorithm)
        except jwt.PyJWTError:
            continue
    return None


def _key_set(*, refresh):
    url = metadata().jwks_uri
    now = time.monotonic()
    cached = _cache.get(("keys", url))
    if cached and cached[0] > now and not refresh:
        return cached[1]
    document = _get_json(url)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ProviderUnavailable("the key set has no keys")
    keys = [key for key in keys if isinstance(key, dict)]
    with _lock:
        _cache[("keys", url)] = (now + KEYS_LIFETIME, keys)
        _cache[("keys fetched", url)] = now
    return keys


def _may_refetch():
    fetched = _cache.get(("keys fetched", metadata().jwks_uri))
    return fetched is None or time.monotonic() - fetched >= KEYS_REFETCH_PAUSE


def forget():
    """Drop what this process knows of the provider (when the settings change, in tests)."""
    with _lock:
        _cache.clear()


def forget_cached_settings(*, setting, **kwargs):
    """Drop the cached provider when its settings change (``setting_changed``, in tests)."""
    if setting.startswith("OIDC_"):
        forget()

"""Pure token cryptography: generate, parse, digest and verify. No database, no Django models.

A token reads ``bpt_<public id 12><secret 32><signature 8>``, all base62. The signature is a truncated
HMAC of everything before it under a key derived from the pepper that made the token, so a value that
was not issued here is refused without a query, and the signature also names the pepper to use.
The stored digest is HMAC-SHA256 of the whole value under another key derived from the same pepper.
See docs/tokens.md.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from .constants import (
    ALPHABET,
    LAST_CHARACTERS_LENGTH,
    PUBLIC_ID_LENGTH,
    SECRET_LENGTH,
    SIGNATURE_LENGTH,
    TOKEN_LENGTH,
    TOKEN_PREFIX,
)

# Pepper rules, shared by the startup validation in portal/settings.py and the system check.
MIN_PEPPER_LENGTH = 32
MAX_PEPPER_ID = 32767  # stored in a PositiveSmallIntegerField
PEPPER_HINT = (
    "Write it as id=value pairs, e.g. TOKEN_PEPPERS=1=<value>,2=<value>, each id a whole number from 1 to "
    f"{MAX_PEPPER_ID} and each value at least {MIN_PEPPER_LENGTH} characters; make one with: "
    "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
)

TOKEN_RE = re.compile(rf"{TOKEN_PREFIX}[0-9A-Za-z]{{{PUBLIC_ID_LENGTH + SECRET_LENGTH + SIGNATURE_LENGTH}}}")
_BODY_LENGTH = TOKEN_LENGTH - SIGNATURE_LENGTH


class MalformedToken(ValueError):
    """The value is not a token issued by this site (wrong shape or bad signature)."""


@dataclass(frozen=True)
class Pepper:
    id: int
    digest_key: bytes
    signature_key: bytes


@dataclass(frozen=True)
class ParsedToken:
    public_id: str
    pepper_id: int
    digest: str


class PepperError(ValueError):
    """TOKEN_PEPPERS cannot make safe digests; the message says why, never showing a value."""


def parse_peppers(raw):
    """Return ``{id: value}`` from TOKEN_PEPPERS written as ``id=value,id=value``, or raise PepperError.

    A value may itself contain "=" (only the first one separates): base64 values end with it.
    """
    peppers = {}
    for index, pair in enumerate(raw.split(","), start=1):
        pid, sep, value = pair.strip().partition("=")
        if not sep:
            raise PepperError(f"entry {index} is not of the form id=value")
        pid = pid.strip()
        if pid in peppers:
            raise PepperError(f"id {pid!r} appears twice")
        peppers[pid] = value.strip()
    validate_peppers(peppers)
    return peppers


def pepper_problems(peppers):
    """Return ``[(check id, sentence)]``: what makes *peppers* (``{id: value}``) unusable, if anything."""
    if not peppers:
        return [("E001", "it is empty")]
    problems = []
    for pid, value in peppers.items():
        # ASCII digits only: "²".isdigit() is True, yet int("²") fails.
        if not re.fullmatch(r"[0-9]{1,5}", str(pid)) or not 0 < int(pid) <= MAX_PEPPER_ID:
            problems.append(("E002", f"id {str(pid)!r} is not a whole number from 1 to {MAX_PEPPER_ID}"))
        elif len(str(value)) < MIN_PEPPER_LENGTH:
            # Never the value itself: it is a secret.
            problems.append(("E003", f"the value of id {pid} is shorter than {MIN_PEPPER_LENGTH} characters"))
    return problems


def validate_peppers(peppers):
    problems = pepper_problems(peppers)
    if problems:
        raise PepperError("; ".join(sentence for _id, sentence in problems))


def _derive(secret, purpose):
    return hmac.new(secret.encode(), purpose, hashlib.sha256).digest()


@lru_cache(maxsize=8)
def _peppers(config):
    peppers = [
        Pepper(int(pid), _derive(value, b"token-digest"), _derive(value, b"token-signature"))
        for pid, value in config
    ]
    # Newest (highest id) first: it signs new tokens and is tried first when verifying.
    return tuple(sorted(peppers, key=lambda p: p.id, reverse=True))


def peppers():
    """Return the configured peppers, newest first (derived keys are computed once per process)."""
    return _peppers(tuple(sorted(settings.TOKEN_PEPPERS.items())))


def _random(length):
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _encode(raw, length):
    number = int.from_bytes(raw, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, 62)
        chars.append(ALPHABET[index])
    return "".join(chars)


def _sign(body, pepper):
    mac = hmac.new(pepper.signature_key, body.encode(), hashlib.sha256).digest()
    return _encode(mac, SIGNATURE_LENGTH)


def digest(value, pepper):
    """Return the hex HMAC-SHA256 of *value* under *pepper*'s digest key."""
    return hmac.new(pepper.digest_key, value.encode(), hashlib.sha256).hexdigest()


def generate():
    """Return (plaintext, ParsedToken) for a new token signed with the newest pepper."""
    pepper = peppers()[0]
    body = TOKEN_PREFIX + _random(PUBLIC_ID_LENGTH) + _random(SECRET_LENGTH)
    value = body + _sign(body, pepper)
    return value, ParsedToken(
        body[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + PUBLIC_ID_LENGTH], pepper.id, digest(value, pepper)
    )


def parse(value):
    """Check *value*'s shape and signature and return its ParsedToken, or raise MalformedToken.

    Costs one or two HMACs and no query: this is what keeps forged tokens away from the database.
    """
    if len(value) != TOKEN_LENGTH or not TOKEN_RE.fullmatch(value):
        raise MalformedToken("not a token")
    body, signature = value[:_BODY_LENGTH], value[_BODY_LENGTH:]
    for pepper in peppers():
        if hmac.compare_digest(_sign(body, pepper), signature):
            public_id = body[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + PUBLIC_ID_LENGTH]
            return ParsedToken(public_id, pepper.id, digest(value, pepper))
    raise MalformedToken("bad signature")


def matches(parsed, stored_digest, stored_pepper_id):
    """Return True if *parsed* is the token stored with *stored_digest*, in constant time."""
    same_pepper = parsed.pepper_id == stored_pepper_id
    same_digest = hmac.compare_digest(parsed.digest, stored_digest)
    return same_pepper & same_digest


def last_characters(value):
    return value[-LAST_CHARACTERS_LENGTH:]


def legacy_digests(key):
    """Return {pepper id: digest} of a legacy API key under every configured pepper."""
    return {pepper.id: digest(key, pepper) for pepper in peppers()}

"""Leaked credentials reported by anyone (or by GitHub secret scanning): revoke, record, tell the owner.

One lookup per distinct value: a value shaped like a token is checked offline first
(``credentials.parse``) and costs one indexed query when it passes; anything else that could be a
legacy key costs one indexed query; the rest costs nothing. Revocation goes through the same
``revoke`` methods as every other path, so the Activity Stream, the lock order and "refused from the
very next request" hold here too. The value itself is never logged, stored or mailed.
"""

import logging
import unicodedata
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from .constants import TOKEN_PREFIX
from .models import LegacyApiKey, Token
from .models.events import LEAK_REPORT_MARK, LEAK_REPORT_SEPARATOR
from .models.legacy import clean_legacy_key
from .notifications import absolute_url, mail_owner

log = logging.getLogger(__name__)

SOURCE_MAX_LENGTH = 100
URL_MAX_LENGTH = 2000
DETAIL_MAX_LENGTH = 255  # TokenEvent.detail


def printable(text, limit):
    """Return *text* without control, format (bidi), surrogate or unassigned characters, cut to *limit*.

    Reporters are anonymous: what they say ends up in an e-mail and on the owner's pages.
    """
    return "".join(c for c in text if not unicodedata.category(c).startswith("C"))[:limit].strip()


@dataclass
class Found:
    """A reported value that is one of ours: the credential, whether it still worked, what it made.

    ``was_active``: the value worked when reported (a token in its rotation overlap included), so
    this report revoked it. ``made``: the live tokens made with the value that this report revoked.
    """

    credential: object
    was_active: bool
    made: list = field(default_factory=list)

    @property
    def revoked_anything(self):
        return self.was_active or bool(self.made)


def find(value):
    """Return the Token or LegacyApiKey whose plaintext is *value*, or None (at most one query)."""
    if value.startswith(TOKEN_PREFIX):
        return Token.objects.find_by_value(value)
    try:
        clean_legacy_key(value)
    except ValidationError:
        return None  # could never authenticate: not worth a query (and not encodable, for a surrogate)
    return LegacyApiKey.objects.find(value)


def revoke_reported(values, *, source="", url="", ip=None):
    """Revoke every live credential among *values* as reported leaked; mail each owner.

    A token's value works while it is active or in its rotation overlap: either is revoked. So is
    every live token made with a reported token's value (its self-rotations, and what it created or
    rotated where the policy lets tokens manage tokens), whether or not the reported value still
    works: a thief who rotated it first holds only the replacement. Return {value: Found} for the
    values that are ours (revoked now or before). Duplicates cost one lookup.
    """
    detail = describe(source, url)
    found = {}
    for value in dict.fromkeys(values):
        credential = find(value)
        if credential is None:
            continue
        if isinstance(credential, Token):
            was_live, made = credential.revoke_reported_leaked(ip=ip, detail=detail)
            found[value] = Found(credential, was_live, made)
        else:
            active = credential.revoked_at is None
            found[value] = Found(credential, active and credential.revoke(actor=None, ip=ip, detail=detail))
        if found[value].revoked_anything:
            tell_owner(
                credential,
                source=source,
                url=url,
                revoked_now=found[value].was_active,
                made=found[value].made,
            )
    return found


def describe(source, url):
    """Return the event detail of a leak report: the reason, where it was found, within 255 characters."""
    parts = [LEAK_REPORT_MARK, *(part for part in (source, url) if part)]
    return LEAK_REPORT_SEPARATOR.join(parts)[:DETAIL_MAX_LENGTH]


def tell_owner(credential, *, source, url, revoked_now=True, made=()):
    """Tell the owner that *credential* was reported leaked and revoked; never raise, never the value.

    *revoked_now*: the report revoked the value itself (it had stopped working before otherwise).
    *made*: the tokens made with the reported value that were revoked with it, named in the mail.
    """
    user = credential.user
    if not user.email:
        return
    is_token = isinstance(credential, Token)
    context = {
        "is_token": is_token,
        "name": credential.name if is_token else "",
        "last_characters": credential.last_characters if is_token else "",
        "key_id": credential.pk,
        "source": source,
        "url": url,
        "new_token_url": absolute_url("tokens:new"),
        "token_url": absolute_url("tokens:detail", credential.pk) if is_token else "",
        "revoked_now": revoked_now,
        "made": [
            {
                "name": token.name,
                "last_characters": token.last_characters,
                "url": absolute_url("tokens:detail", token.pk),
            }
            for token in made
        ],
    }
    try:
        mail_owner(user, "leaked_credential", context)
    except Exception as error:
        log.error("leak notice not sent: user_id=%s error=%s", user.pk, type(error).__name__)

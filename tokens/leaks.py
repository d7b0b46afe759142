"""Leaked credentials reported by anyone (or by GitHub secret scanning): revoke, record, tell the owner.

One lookup per distinct value: a value shaped like a token is checked offline first
(``credentials.parse``) and costs one indexed query when it passes; anything else that could be a
legacy key costs one indexed query; the rest costs nothing. Revocation goes through the same
``revoke`` methods as every other path, so the Activity Stream, the lock order and "refused from the
very next request" hold here too. The value itself is never logged, stored or mailed.
"""

import logging
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

from .constants import TOKEN_PREFIX
from .models import LegacyApiKey, Token
from .models.events import LEAK_REPORT_MARK, LEAK_REPORT_SEPARATOR
from .models.legacy import clean_legacy_key

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
    """A reported value that is one of ours: the credential, and whether this report revoked it."""

    credential: object
    was_active: bool


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
    """Revoke every active credential among *values* as reported leaked; mail each owner.

    Return {value: Found} for the values that are ours (revoked now or before). Duplicates cost
    one lookup.
    """
    detail = describe(source, url)
    found = {}
    for value in dict.fromkeys(values):
        credential = find(value)
        if credential is None:
            continue
        active = credential.is_active if isinstance(credential, Token) else credential.revoked_at is None
        found[value] = Found(credential, active)
        if active and credential.revoke(actor=None, ip=ip, detail=detail):
            mail_owner(credential, source=source, url=url)
    return found


def describe(source, url):
    """Return the event detail of a leak report: the reason, where it was found, within 255 characters."""
    parts = [LEAK_REPORT_MARK, *(part for part in (source, url) if part)]
    return LEAK_REPORT_SEPARATOR.join(parts)[:DETAIL_MAX_LENGTH]


def mail_owner(credential, *, source, url):
    """Tell the owner that *credential* was reported leaked and revoked; never raise, never the value."""
    user = credential.user
    if not user.email:
        return
    is_token = isinstance(credential, Token)
    context = {
        "user": user,
        "is_token": is_token,
        "name": credential.name if is_token else "",
        "last_characters": credential.last_characters if is_token else "",
        "key_id": credential.pk,
        "source": source,
        "url": url,
        "new_token_url": settings.SITE_URL + reverse("tokens:new"),
        "token_url": settings.SITE_URL + reverse("tokens:detail", args=[credential.pk]) if is_token else "",
    }
    subject = render_to_string("email/leaked_credential_subject.txt", context).strip()
    body = render_to_string("email/leaked_credential.txt", context)
    try:
        send_mail(subject, body, None, [user.email])
    except Exception as error:
        log.error("leak notice not sent: user_id=%s error=%s", user.pk, type(error).__name__)

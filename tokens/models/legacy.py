"""Legacy API keys: the old system's per-user keys, kept as digests until their owners move to tokens.

A key is imported (``LegacyApiKey.objects.import_key``), checked on the request path beside tokens, and
refused or allowed by the cutover's security level in the policy. Its own module because the keys have
their own lifecycle: imported, never issued, noticed to their owners while still in use, then switched
off for everyone.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import groupby

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .. import credentials
from ..constants import (
    DIGEST_LENGTH,
    LEGACY_KEY_MAX_LENGTH,
    LEGACY_KEY_MIN_DISTINCT,
    LEGACY_KEY_MIN_LENGTH,
    MIGRATION_GUIDE_PATH,
)
from ..notifications import absolute_url, mail_owner, site_url
from .base import Credential
from .events import TokenEvent
from .policy import BrownoutWindow, SitePolicy
from .usage import UsageRecord

# "Still in use": the window of the migration overview and of the owners' notices.
NOTICE_WINDOW = timedelta(days=30)


@dataclass
class NoticeReport:
    """What one run of ``notify_owners`` did: owners and keys mailed, owners skipped or failed."""

    owners: int = 0
    keys: int = 0
    already: int = 0
    without_email: list = field(default_factory=list)
    failed: list = field(default_factory=list)


def clean_legacy_key(key):
    """Return *key* if it is a key the API could accept, or raise ValidationError({"key": …}).

    The same rule serves the import and authentication: a key that could never sign in is not imported.
    """
    if (
        not key
        or len(key) > LEGACY_KEY_MAX_LENGTH
        or not key.isascii()
        or not key.isprintable()
        or key != key.strip()
    ):
        raise ValidationError(
            {
                "key": _("A key must be 1 to %(n)d printable ASCII characters without surrounding spaces.")
                % {"n": LEGACY_KEY_MAX_LENGTH}
            }
        )
    return key


def check_legacy_key_strength(key):
    """Raise ValidationError({"key": …}) unless *key* is too strong to guess online; used at import only.

    The rule: at least LEGACY_KEY_MIN_LENGTH characters, from at least two kinds (lower-case letters,
    upper-case letters, digits, other symbols), with at least LEGACY_KEY_MIN_DISTINCT different
    characters. A 32-character hex key or a UUID passes; "k", a 16-digit number or "aaaa…" does not.
    Keys already imported are not checked again: authentication only applies ``clean_legacy_key``.
    """
    if len(key) < LEGACY_KEY_MIN_LENGTH:
        raise ValidationError(
            {
                "key": _("The key is too weak: a key must be at least %(n)d characters long.")
                % {"n": LEGACY_KEY_MIN_LENGTH}
            }
        )
    kinds = {
        "lower" if c.islower() else "upper" if c.isupper() else "digit" if c in "0123456789" else "other"
        for c in key
    }
    if len(kinds) < 2:
        raise ValidationError(
            {
                "key": _(
                    "The key is too weak: it must mix at least two kinds of characters "
                    "(lower-case, upper-case, digits, symbols)."
                )
            }
        )
    if len(set(key)) < LEGACY_KEY_MIN_DISTINCT:
        raise ValidationError(
            {
                "key": _("The key is too weak: it must have at least %(n)d different characters.")
                % {"n": LEGACY_KEY_MIN_DISTINCT}
            }
        )


class LegacyApiKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def find(self, key):
        """Return the key row matching plaintext *key* under any configured pepper, or None."""
        digests = credentials.legacy_digests(key)
        for row in self.filter(digest__in=digests.values()).select_related("user"):
            if digests.get(row.pepper_id) == row.digest:
                return row
        return None

    def used_since(self, moment):
        """Return the keys with an accepted use at or after *moment*.

        By the summaries (last_used_at, which the request path also sets at a key's first use each
        day), or by a record the summaries do not hold yet (a subquery, an index range above the
        watermark): exact without waiting for the summariser.
        """
        tail = UsageRecord.objects.unsummarised(legacy_key__isnull=False, at__gte=moment).filter(
            accepted=True
        )
        return self.filter(Q(last_used_at__gte=moment) | Q(pk__in=tail.values("legacy_key_id")))

    def mark_first_use_of_day(self, pk, *, at, ip=None):
        """Set the last use of key *pk* to *at* unless it was used earlier that UTC day; return True if set.

        The request path's write to a key row: once a day per key, for the "legacy key used" event and
        the "never used" filter (the summariser keeps the last use current in between). Only the key's
        row is locked (docs/security.md, "Lock order", step 2).
        """
        day_start = datetime.combine(at.astimezone(UTC).date(), time.min, tzinfo=UTC)
        return bool(
            self.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=day_start), pk=pk).update(
                last_used_at=at, last_used_ip=ip
            )
        )


class LegacyApiKeyManager(models.Manager.from_queryset(LegacyApiKeyQuerySet)):
    def notify_owners(self, *, actor, usage_totals, now=None):
        """Mail every owner of an active key used in the last 30 days about the cutover; return a report.

        One mail per owner, naming each key by id (never its value) with its last use, the sunset date,
        the brownout windows still to come and how to migrate. A key is mailed at most once a day: its
        "legacy_notified" event (unique per key and day) is claimed before the mail goes out and given
        back if sending fails, so a second click, or two administrators at once, send nothing new.

        *usage_totals* sets each key's exact request count and last use for the mail
        (``tokens.usage.read.usage_totals``, given by the caller: the models never import the usage store).
        """
        now = now or timezone.now()
        day = now.date().isoformat()
        keys = (
            self.active()
            .used_since(now - NOTICE_WINDOW)
            .filter(user__is_active=True)
            .select_related("user")
            .order_by("user_id", "pk")
        )
        # The mail shows each key's last use and count: summaries + the records not summarised yet.
        keys = usage_totals(list(keys))
        policy = SitePolicy.load()
        context = {
            "sunset_at": policy.legacy_sunset_at,
            "level_refuses": policy.legacy_refusal(now) is not None,
            "brownouts": list(BrownoutWindow.objects.upcoming(now)),
            "guide_url": site_url(MIGRATION_GUIDE_PATH),
            "new_token_url": absolute_url("tokens:new"),
        }
        report = NoticeReport()
        for user, owned in groupby(keys, key=lambda key: key.user):
            owned = list(owned)
            if not user.email:
                report.without_email.append(user.get_username())
                continue
            claimed = [key for key in owned if self._claim_notice(key, actor=actor, now=now, day=day)]
            report.already += len(owned) - len(claimed)
            if not claimed:
                continue
            try:
                mail_owner(user, "legacy_cutover", {"keys": claimed, **context})
            except Exception as error:
                # Give the claims back, so the next click tries this owner again.
                TokenEvent.objects.filter(
                    kind=TokenEvent.Kind.LEGACY_NOTIFIED, legacy_key__in=claimed, detail=day
                ).delete()
                report.failed.append(f"{user.get_username()} ({type(error).__name__})")
                continue
            report.owners += 1
            report.keys += len(claimed)
        return report

    @staticmethod
    def _claim_notice(key, *, actor, now, day):
        try:
            with transaction.atomic():
                TokenEvent.objects.create(
                    user_id=key.user_id,
                    legacy_key_id=key.pk,
                    actor_id=actor.pk if actor else None,
                    kind=TokenEvent.Kind.LEGACY_NOTIFIED,
                    at=now,
                    detail=day,
                )
        except IntegrityError:
            return False  # already mailed today (event_legacy_notice_per_day)
        return True

    def import_key(self, *, user, key):
        """Store *key* for *user* as a digest; return (row, created). An already imported key is skipped."""
        key = clean_legacy_key(key)
        check_legacy_key_strength(key)
        existing = self.find(key)
        if existing is not None:
            if existing.user_id != user.pk:
                raise ValidationError({"key": _("This key is already imported for another user.")})
            return existing, False
        pepper = credentials.peppers()[0]
        # A new row; its foreign key takes FOR KEY SHARE on the owner, like a new token or event
        # (docs/security.md, "Lock order").
        with transaction.atomic():
            row = self.create(
                user=user,
                digest=credentials.digest(key, pepper),
                pepper_id=pepper.id,
            )
        return row, True


class LegacyApiKey(Credential):
    """A deprecated per-user API key, imported from the old system. Only its digest is kept."""

    event_field = "legacy_key"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        on_delete=models.CASCADE,
        related_name="legacy_api_keys",
    )
    digest = models.CharField(
        verbose_name=_("digest"),
        max_length=DIGEST_LENGTH,
        unique=True,
        editable=False,
    )
    imported_at = models.DateTimeField(
        verbose_name=_("imported at"),
        default=timezone.now,
        editable=False,
    )
    objects = LegacyApiKeyManager()

    class Meta:
        verbose_name = _("legacy API key")
        verbose_name_plural = _("legacy API keys")
        ordering = ("-imported_at", "-id")
        indexes = [models.Index(fields=["user"], name="legacy_key_user")]

    def __str__(self):
        return _("Legacy key #%(id)s of %(user)s") % {"id": self.pk, "user": self.user}

    @property
    def status(self):
        return "revoked" if self.revoked_at else "active"

    def revoke(self, *, actor, ip=None, detail=""):
        """Refuse the key from the very next request on. A second revoke changes nothing."""
        return self._revoke(actor=actor, kind=TokenEvent.Kind.LEGACY_REVOKED, ip=ip, detail=detail)
